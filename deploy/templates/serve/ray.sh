#!/usr/bin/env bash
# ${title}
# One replica spans ${nodes} nodes joined by a Ray cluster.  Run this script on each of them:
#   NODE_RANK=0 bash ${file}                                    # the Ray head; serves HTTP on port ${port}
#   NODE_RANK=1 MASTER_ADDR=<node 0 address> bash ${file}       # each other node joins the cluster
# The head waits until all ${nodes} nodes joined, then starts vLLM.  Every value is shell-quoted.
# HF_TOKEN, when the model needs one, is read from your environment.
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK: 0 on the Ray head, ${other_ranks} on the others}"
${env_exports}if [ "$NODE_RANK" = 0 ]; then
  ray start --head --port=6379
  until [ "$(python3 -c 'import ray; ray.init(address="auto", logging_level="ERROR"); print(sum(n["Alive"] for n in ray.nodes()))')" -ge ${nodes} ]; do
    echo "waiting for the Ray workers"; sleep 5
  done
  exec ${command}
else
  : "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
  exec ray start --address="$MASTER_ADDR:6379" --block
fi
