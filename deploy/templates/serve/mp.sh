#!/usr/bin/env bash
# ${title}
# One replica spans ${nodes} nodes (vLLM's --nnodes/--node-rank/--master-addr, no Ray).  Run this
# script on each of them, node 0 first; node 0 serves HTTP on port ${port}, the others run headless:
#   NODE_RANK=0 MASTER_ADDR=<node 0 address> bash ${file}       # on node 0
#   NODE_RANK=1 MASTER_ADDR=<node 0 address> bash ${file}       # on node 1, and so on
# Every value is shell-quoted.  HF_TOKEN, when the model needs one, is read from your environment.
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK: 0 on the node that serves HTTP, ${other_ranks} on the others}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
${env_exports}if [ "$NODE_RANK" = 0 ]; then
  exec ${leader_command}
else
  exec ${worker_command}
fi
