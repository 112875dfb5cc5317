#!/usr/bin/env bash
# The main job on a small default input: set up `.venv`, convert the NIH sample shipped in the repo into a
# 🤗 dataset, train the tiny demo model on it, evaluate on the sample's official test images.
# Idempotent: a finished step is reused, never overwritten. Extra flags go to the training recipe.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

DEMO_DIR="${CHESTXRAY_DEMO_DIR:-outputs/demo}"
DATASET="$DEMO_DIR/dataset"
RUN="$DEMO_DIR/run"
if [ -d "$DATASET" ]; then
    echo "Reusing the converted sample in $DATASET"
else
    chestxray convert --nih-root pipeline/assets/nih_sample --output "$DATASET" \
        --image-size 128 --validation-fraction 0.25
fi
if [ -f "$RUN/test_results.json" ] && [ -f "$RUN/test_predictions.csv" ]; then  # RunFolder.is_finished
    echo "The demo run in $RUN is complete; delete it to train again."
else
    resume=false
    ls -d "$RUN"/checkpoint-* >/dev/null 2>&1 && resume=true
    python recipes/vit.py --config recipes/configs/demo.yaml \
        --dataset_name_or_path "$DATASET" --output_dir "$RUN" --resume_from_checkpoint "$resume" "$@"
fi
cat "$RUN/test_results.json"
echo
