#!/usr/bin/env bash
# The robot install path, checked: build this package with Debian's colcon in a throwaway
# workspace, then check what the install space holds and that every console script starts.
#
#   .ci/colcon_check.sh            (root for apt-get and the loopback namespace; run by .ci/run)
#
# 1. apt-get installs Debian's colcon (python3-colcon-ros, python3-colcon-python-setup-py,
#    python3-ament-package + the bash/package-selection extensions) only when one is missing.
# 2. Copies the checkout (git-tracked and untracked-but-not-ignored files: what a clone holds, no
#    .venv) to <tmp>/src/simreal_ros and runs `colcon build --packages-select simreal_ros` there;
#    build/, install/ and log/ live in the temporary workspace, which is removed at exit.
# 3. The share directory must hold package.xml, the ament index marker and launch/, config/, urdf/,
#    policies/ (named files, and every file of those source folders, byte-identical).
# 4. With install/setup.bash sourced, every console script in setup.py's entry_points is run BY
#    PATH from install/simreal_ros/lib/simreal_ros with the project venv's interpreter
#    ($SIMREAL_VENV, default .venv, as ./run): the venv stands in for the robot's ROS install
#    (rclpy, message packages, numpy, mujoco, onnxruntime), while the script and the simreal_ros
#    code it imports come from the install space (checked: the import resolves there, not to the
#    venv's editable checkout, and the package finds its data in the installed share directory).
#    `NAME --help` must exit 0 within $HELP_TIMEOUT s and print a usage line. The runs happen in
#    parallel inside a private network namespace with only loopback: a script that ignores
#    --help and starts a node sends no DDS packet off the machine.
# Exit status: 0 when everything holds, 1 with one line per problem otherwise.
set -euo pipefail

SELF=$(realpath "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
VENV=${SIMREAL_VENV:-$REPO/.venv}
case "$VENV" in /*) ;; *) VENV=$REPO/$VENV ;; esac
PY=$VENV/bin/python
PKG=simreal_ros
HELP_TIMEOUT=${HELP_TIMEOUT:-20}
APT_PACKAGES=(colcon python3-colcon-ros python3-colcon-python-setup-py python3-ament-package
              python3-colcon-package-selection python3-colcon-bash)

say() { echo "[colcon-check] $*"; }
fail() { echo "[colcon-check] FAIL: $*" >&2; }
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# --- internal: run every console script's --help in parallel (called inside the namespace) ---
if [ "${1:-}" = __help_checks ]; then
  shift
  lib=$1 out=$2; shift 2
  pids=()
  for name in "$@"; do
    ( code=0
      timeout -k 5 "$HELP_TIMEOUT" "$PY" "$lib/$name" --help >"$out/$name.out" 2>"$out/$name.err" || code=$?
      echo "$code" >"$out/$name.rc" ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  exit 0
fi

[ -x "$PY" ] || { fail "no project venv at $VENV (run ./run test or ./run sim --help once to create it)"; exit 1; }

# --- 1. Debian's colcon, installed only when something is missing (idempotent) ---
t0=$EPOCHREALTIME
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    fail "Debian packages missing: ${missing[*]} (run as root, or: sudo apt-get install --no-install-recommends ${missing[*]})"
    exit 1
  fi
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq </dev/null >/dev/null
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
command -v colcon >/dev/null || { fail "colcon not on PATH after installing ${APT_PACKAGES[*]}"; exit 1; }
t_apt=$(secs "$t0")

# --- 2. build in a temporary workspace outside the repo ---
WS=$(mktemp -d "${TMPDIR:-/tmp}/simreal_colcon.XXXXXX")
trap 'rm -rf "$WS"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$WS/src/$PKG" "$WS/run"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # only files that exist (a deleted-but-unstaged file is not part of the tree being checked)
  git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
    | tar -C "$REPO" --null -T - -cf - | tar -C "$WS/src/$PKG" -xf -
else
  tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./install \
      --exclude=./log --exclude=./runs -cf - . | tar -C "$WS/src/$PKG" -xf -
fi
t0=$EPOCHREALTIME
if ! (cd "$WS" && COLCON_HOME="$WS/colcon_home" colcon --log-base "$WS/log" build \
        --packages-select "$PKG" --build-base "$WS/build" --install-base "$WS/install" \
        </dev/null >"$WS/build.out" 2>&1); then
  cat "$WS/build.out" >&2
  fail "colcon build --packages-select $PKG failed (output above)"
  exit 1
fi
t_build=$(secs "$t0")
# colcon-ros installs a missing ament index marker or package.xml itself, with a warning; a
# package relying on that fallback (announced to be removed) is broken for the next colcon.
if grep -q "doesn't explicitly install" "$WS/build.out"; then
  fail "setup.py's data_files do not install the ament index marker or package.xml: $(grep "doesn't explicitly install" "$WS/build.out" | head -n 2 | tr '\n' ' ')"
  build_warned=1
else
  build_warned=0
fi

# --- 3. the installed share directory ---
t0=$EPOCHREALTIME
SHARE=$WS/install/$PKG/share/$PKG
LIB=$WS/install/$PKG/lib/$PKG
problems=$build_warned
for f in "share/ament_index/resource_index/packages/$PKG" "share/$PKG/package.xml"; do
  [ -f "$WS/install/$PKG/$f" ] || { fail "install space lacks $f"; problems=$((problems + 1)); }
done
for f in launch/bringup.launch.py config/shield.yaml urdf/panda.urdf policies/reach_default/manifest.yaml; do
  if [ ! -d "$SHARE/${f%%/*}" ]; then
    fail "installed share directory lacks ${f%%/*}/ (expected $SHARE/$f; is it in setup.py's data_files?)"
    problems=$((problems + 1))
  elif [ ! -s "$SHARE/$f" ]; then
    fail "installed share directory lacks $f (or it is empty)"
    problems=$((problems + 1))
  fi
done
# every file of the source folders, not only the named ones (a forgotten subfolder shows here)
while IFS= read -r -d '' f; do
  rel=${f#"$WS/src/$PKG/"}
  if [ ! -f "$SHARE/$rel" ]; then
    fail "installed share directory lacks $rel"; problems=$((problems + 1))
  elif ! cmp -s "$f" "$SHARE/$rel"; then
    fail "installed $rel differs from the source"; problems=$((problems + 1))
  fi
done < <(find "$WS/src/$PKG/launch" "$WS/src/$PKG/config" "$WS/src/$PKG/urdf" \
           "$WS/src/$PKG/policies" -type f ! -path '*/__pycache__/*' -print0 2>/dev/null)

# the console scripts setup.py declares (read from its source, independently of the build)
mapfile -t SCRIPTS < <("$PY" - "$WS/src/$PKG/setup.py" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup":
        for kw in node.keywords:
            if kw.arg == "entry_points":
                for spec in ast.literal_eval(kw.value).get("console_scripts", []):
                    print(spec.split("=", 1)[0].strip())
EOF
)
[ ${#SCRIPTS[@]} -gt 0 ] || { fail "no console_scripts found in setup.py's entry_points"; problems=$((problems + 1)); }

# the installed code and data are what the scripts use (not the venv's editable checkout)
set +u
# shellcheck disable=SC1091
source "$WS/install/setup.bash"
set -u
unset SIMREAL_ROS_SHARE
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( ($$ % 200) + 1 ))}
if where=$(cd "$WS/run" && "$PY" -c 'import simreal_ros, simreal_ros.resources as r
print(simreal_ros.__file__); print(r.share_dir())' 2>"$WS/where.err"); then
  case "$(sed -n 1p <<<"$where")" in
    "$WS/install/"*) ;;
    *) fail "with install/setup.bash sourced, the venv's python imports $PKG from $(sed -n 1p <<<"$where"), not from the install space"
       problems=$((problems + 1)) ;;
  esac
  [ "$(sed -n 2p <<<"$where")" = "$SHARE" ] || {
    fail "the installed $PKG finds its share directory at $(sed -n 2p <<<"$where"), not at the installed $SHARE"
    problems=$((problems + 1)); }
else
  fail "with install/setup.bash sourced, the installed $PKG cannot be imported or cannot find its share directory: $(tail -n 1 "$WS/where.err")"
  problems=$((problems + 1))
fi
t_share=$(secs "$t0")

# --- 4. every console script starts: NAME --help ---
t0=$EPOCHREALTIME
present=()
for s in "${SCRIPTS[@]}"; do
  if [ -x "$LIB/$s" ]; then present+=("$s")
  else fail "console script $s is not installed in lib/$PKG"; problems=$((problems + 1)); fi
done
mkdir -p "$WS/help"
if [ ${#present[@]} -gt 0 ]; then
  export PY HELP_TIMEOUT
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
    (cd "$WS/run" && unshare -n bash -c 'ip link set lo up && exec "$@"' _ \
       "$SELF" __help_checks "$LIB" "$WS/help" "${present[@]}")
  else
    say "warning: no network namespace (needs root + unshare); DDS limited to LOCALHOST only"
    (cd "$WS/run" && "$SELF" __help_checks "$LIB" "$WS/help" "${present[@]}")
  fi
fi
for s in "${present[@]}"; do
  rc=$(cat "$WS/help/$s.rc" 2>/dev/null || echo missing)
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    fail "$s --help did not exit within ${HELP_TIMEOUT} s (it ignores --help and runs?); stderr: $(tail -n 2 "$WS/help/$s.err" | tr '\n' ' ')"
    problems=$((problems + 1))
  elif [ "$rc" != 0 ]; then
    fail "$s --help exited $rc: $(tail -n 1 "$WS/help/$s.err")"
    problems=$((problems + 1))
  elif ! grep -qi '^usage' "$WS/help/$s.out"; then
    fail "$s --help exited 0 but printed no usage line on stdout"
    problems=$((problems + 1))
  fi
done
t_help=$(secs "$t0")

say "timing: apt ${t_apt} s, colcon build ${t_build} s, share checks ${t_share} s, ${#present[@]} console scripts --help ${t_help} s"
if [ "$problems" -gt 0 ]; then
  fail "$problems problem(s) in the colcon install of $PKG"
  exit 1
fi
say "OK: colcon build, share/$PKG holds launch/ config/ urdf/ policies/, ${#present[@]} console scripts start"
