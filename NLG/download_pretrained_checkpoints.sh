#!/usr/bin/env bash
# The methods' READMEs run this from NLG/; the script itself lives at the repository's top level.
exec bash "$(dirname "$0")/../download_pretrained_checkpoints.sh" "$@"
