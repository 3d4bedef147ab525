#!/usr/bin/env bash
# Submit a tinyllm-ray job to a running Ray cluster through the Jobs API.
#
#   cluster/submit.sh [CONFIG] [field.path=value ...]
#   cluster/submit.sh tinyllm_commonsense train.max_steps=200
#   TINYLLM_CMD=generate cluster/submit.sh minds_mirror_svamp
#
# Environment:
#   RAY_ADDRESS    Jobs API (dashboard) URL; default http://127.0.0.1:8265 — a local head,
#                  `ray dashboard cluster/aws-gpu.yaml`, or `kubectl port-forward` tunnel.
#   TINYLLM_CMD    subcommand: run (default) | generate | train | tune | eval | demo
#   RAY_AUTH_MODE  token (default here): send the cluster token with every request.
#                  The token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
#   NO_WAIT=1      return after submission (then: ray job logs -f <id>, ray job status <id>)
#
# Why a script: the Jobs API uploads the working directory (minus runtime_env excludes) and
# runs the CLI on the head; keeping the exact flags in one place keeps the docs, the
# cluster configs and tests/unit/test_cluster_manifests.py in agreement.
set -euo pipefail

cd "$(dirname "$0")/.."

CONFIG="${1:-tinyllm_commonsense}"
shift || true
CMD="${TINYLLM_CMD:-run}"
ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"

case "$CMD" in
  run|generate|train|tune|eval|demo) ;;
  *) echo "submit.sh: TINYLLM_CMD must be one of run generate train tune eval demo, got '$CMD'" >&2; exit 2 ;;
esac

if [[ "$RAY_AUTH_MODE" == "token" && -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" \
      && ! -s "$HOME/.ray/auth_token" ]]; then
  echo "submit.sh: token auth is on but no token found; set RAY_AUTH_TOKEN (KubeRay:" \
       "kubectl get secret <cluster> --template='{{.data.auth_token}}' | base64 -d)" \
       "or copy the cluster's token to ~/.ray/auth_token" >&2
  exit 2
fi

WAIT_FLAG=()
[[ -n "${NO_WAIT:-}" ]] && WAIT_FLAG=(--no-wait)

exec ray job submit \
  --address "$ADDRESS" \
  --working-dir . \
  --runtime-env cluster/runtime_env.yaml \
  "${WAIT_FLAG[@]}" \
  -- tinyllm-ray "$CMD" --config "$CONFIG" "$@"
