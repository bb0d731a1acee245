#!/usr/bin/env bash
# Build the reference environment of the parity tests in .venv-ref (if missing): the pinned
# requirements installed normally, then the reference packages (image-reward, hpsv2, openai-clip,
# t2v_metrics, qwen-vl-utils) with --no-deps, then the BPE vocabulary that hpsv2's bundled
# open_clip expects next to itself.
# Needs network access to PyPI only; a second run with .venv-ref present does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${REF_VENV:-.venv-ref}"
STAMP="$VENV/.installed"
if [[ -f "$STAMP" && "$STAMP" -nt parity/requirements-reference.txt && "$STAMP" -nt parity/install-reference.sh ]]; then
    echo "reference venv $VENV is up to date"
    exit 0
fi
# Ignore machine pip configuration (a find-links CPU-only torch no torchvision loads with): PyPI defaults.
PIP=(env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" -m pip)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q -r parity/requirements-reference.txt
"${PIP[@]}" install -q --no-deps image-reward==1.5 hpsv2==1.2.0 openai-clip==1.0.1 t2v_metrics==3.0 qwen-vl-utils==0.0.14
"$VENV/bin/python" - <<'PY'
import pathlib, shutil
import open_clip, hpsv2
src = pathlib.Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
dst = pathlib.Path(hpsv2.__file__).parent / "src" / "open_clip" / "bpe_simple_vocab_16e6.txt.gz"
if not dst.exists():
    shutil.copyfile(src, dst)
print("bpe vocabulary at", dst)
PY
HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "import ImageReward, hpsv2.img_score, clip, pytorch_fid.fid_score, qwen_vl_utils, modelscope.models.multi_modal.mplug.modeling_mplug, prdc, aesthetics_predictor; print('reference packages import')"
touch "$STAMP"
