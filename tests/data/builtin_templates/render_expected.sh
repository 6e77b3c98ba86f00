#!/usr/bin/env bash
# Re-makes the expected renderings of the built-in chat templates: each template's Jinja source
# (as `tandem template --chat-template NAME --print-template` prints it) rendered by the reference
# renderer (Python's jinja2, ../../../../shared/tools/render_chat_template.py) for every case here.
# usage: tests/data/builtin_templates/render_expected.sh BUILD_DIR/tandem
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tandem="$1"
renderer="$here/../../../../shared/tools/render_chat_template.py"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rm -f "$here"/*.txt
for name in chatml gemma llama2 llama3 mistral phi3 qwen2 zephyr; do
  "$tandem" template --chat-template "$name" --print-template > "$tmp/$name.jinja"
  for c in "$here"/cases/*.json; do
    /usr/bin/python3 "$renderer" "$tmp/$name.jinja" "$c" > "$here/$name.$(basename "$c" .json).txt"
  done
done
