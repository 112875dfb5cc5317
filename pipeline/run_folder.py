"""The files of a run folder that `train` writes and `cards`, `hub`, `predict`, `report` and `study` read."""

RUN_CONFIG = "run_config.yaml"
THRESHOLDS = "thresholds.json"
# Written by the Trainer itself; test results come last, so their file marks a finished run.
ALL_RESULTS = "all_results.json"
EVAL_RESULTS = "eval_results.json"
TEST_RESULTS = "test_results.json"
TRAINER_STATE = "trainer_state.json"
TEST_PREDICTIONS = "test_predictions.csv"
VALIDATION_PREDICTIONS = "validation_predictions.csv"
