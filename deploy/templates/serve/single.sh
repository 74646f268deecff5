#!/usr/bin/env bash
# ${title}
# Every value is shell-quoted.  HF_TOKEN, when the model needs one, is read from your environment.
set -euo pipefail
${env_exports}exec ${command}
