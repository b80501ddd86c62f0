# Shared helpers for the scripts: install what is missing, quietly.

need_apt() { # need_apt COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 (apt)"
  if [ -z "${HAVEN_APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; export HAVEN_APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || need_apt cargo cargo
  need_apt cc gcc
  need_apt python3 python3
}

ensure_nextest() {
  command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
}

ensure_postgres() { # the server binaries (initdb, pg_ctl) and the client tools
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing postgresql (apt)"
    if [ -z "${HAVEN_APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; export HAVEN_APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  need_apt pg_dump postgresql-client
}

ensure_schemathesis() { # `st`, the OpenAPI fuzzer the API's schema test runs (from PyPI)
  [ -d "$HOME/.local/bin" ] && export PATH="$HOME/.local/bin:$PATH"
  command -v st >/dev/null 2>&1 && return 0
  echo "installing schemathesis (pip)"
  python3 -m pip --version >/dev/null 2>&1 || need_apt pip3 python3-pip
  python3 -m pip install -q schemathesis 2>/dev/null \
    || python3 -m pip install -q --break-system-packages schemathesis
  [ -d "$HOME/.local/bin" ] && export PATH="$HOME/.local/bin:$PATH"
  command -v st >/dev/null 2>&1
}
