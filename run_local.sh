#!/usr/bin/env bash
# Runs the audit with the DirectRunner. With no flags: the bundled EfficientNet-Lite0
# on the bundled sample photos, offline, into ./output/sample. Any flag overrides.
# Only the default ./output/sample is replaced by a new run (--overwrite); another
# --output that holds an earlier audit is refused, so it is never lost silently.
# Relative paths (--dataset, --model, --output) are the caller's, as with any command.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

default_output=./output/sample
output=$default_output
keep=""
previous=""
for arg in "$@"; do
  if [[ $previous == --output ]]; then output=$arg; fi
  case $arg in
    --output=*) output=${arg#--output=} ;;
    --overwrite | --resume) keep=yes ;;  # the user decides
  esac
  previous=$arg
done
overwrite=()
case ${output%/} in
  ./output/sample | output/sample | "$PWD/output/sample")
    if [[ -z $keep ]]; then overwrite=(--overwrite); fi ;;
esac

"$here/scripts/bootstrap.sh"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
# This checkout's job, whatever the caller's folder holds: -P keeps the caller's
# folder (a project with its own `pipeline` package) off sys.path.
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$here/.venv/bin/python" -P -m pipeline \
  --runner DirectRunner \
  --dataset sample \
  --model efficientnet_lite0 \
  --output "$default_output" \
  ${overwrite[@]+"${overwrite[@]}"} \
  "$@"
