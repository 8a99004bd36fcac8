#!/usr/bin/env bash
# The development machine's run queues, from a pinned second checkout so that edits to this tree never change a
# running queue (the records still land in this tree):
#
#   bash scripts/dev/queue.sh start compare|recipe|zoo  # check out HEAD in ../wt-runs (detached), start that queue
#   bash scripts/dev/queue.sh pause-after ID         # wait for that record (or hub/ID), then stop the queue there
#   bash scripts/dev/queue.sh stop                   # stop now (the cut run resumes from its checkpoint next start)
#   bash scripts/dev/queue.sh commit-records         # every 2 minutes, commit new records and published models
#   bash scripts/dev/queue.sh status                 # the queue's log tail and what runs
#
# Logs: runs/queue.log, runs/commit_records.log. runs/ is shared with the worktree (a symlink) and is not committed:
# on a fresh machine a cut run starts over, so stop at a run boundary (pause-after) before a session ends.
set -euo pipefail
MAIN=$(cd "$(dirname "$0")/../.." && pwd)
WT=${XMOCO_WORKTREE:-$(dirname "$MAIN")/wt-runs}
mkdir -p "$MAIN/runs"

records_dir() {
  case "$1" in
    compare) echo "$MAIN/docs/results/methods_fmnist" ;;
    recipe) echo "$MAIN/docs/results/recipe_search" ;;
    zoo) echo "$MAIN/hub" ;;
    *) echo "unknown queue '$1': compare, recipe or zoo" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  start)
    which=${2:?compare, recipe or zoo}
    out=$(records_dir "$which")
    if [ ! -d "$WT" ]; then git -C "$MAIN" worktree prune; git -C "$MAIN" worktree add -f --detach "$WT" HEAD >/dev/null; fi
    [ -e "$WT/runs" ] || ln -s "$MAIN/runs" "$WT/runs"
    git -C "$WT" checkout -q --detach "$(git -C "$MAIN" rev-parse HEAD)"
    case "$which" in
      compare) script=compare_methods.py; var=XMOCO_COMPARE_OUT ;;
      recipe) script=recipe_search.py; var=XMOCO_RECIPE_OUT ;;
      zoo) script=zoo_queue.py; var=XMOCO_HUB_OUT ;;
    esac
    cd "$WT"
    env PYTHONPATH="$WT" "$var=$out" nohup python scripts/$script run "${@:3}" >> "$MAIN/runs/queue.log" 2>&1 &
    echo "$which queue started (pid $!) at $(git -C "$WT" rev-parse --short HEAD); log: runs/queue.log"
    ;;
  pause-after)
    id=${2:?RECORD_ID}
    # a record of the comparison or the recipe search, or a model the zoo queue delivered to hub/
    until ls "$MAIN"/docs/results/*/runs/"$id".json >/dev/null 2>&1 || [ -d "$MAIN/hub/$id" ]; do sleep 20; done
    bash "$0" stop
    echo "paused after $id"
    ;;
  stop)
    pkill -f "scripts/(compare_methods|recipe_search|zoo_queue).py run" || true
    pkill -f "publish_fmnist.sh runs/zoo/" || true
    pkill -f "output_dir=runs/(compare|recipe|zoo|eval)/" || true
    ;;
  commit-records)
    cd "$MAIN"
    while true; do
      for d in docs/results/methods_fmnist/runs docs/results/recipe_search/runs; do
        [ -d "$d" ] || continue
        new=$(git status --porcelain --untracked-files=all -- "$d" | awk '{print $2}')
        if [ -n "$new" ]; then
          # shellcheck disable=SC2086
          msg=$(python3 - $new <<'PY'
import json, sys
parts = []
for p in sys.argv[1:]:
    d = json.load(open(p))
    s = f"{d['id']}: " + ("diverged" if "diverged" in d else f"kNN {d['knn']:.2f}")
    parts.append(s + (f", linear {d['linear']:.2f}" if d.get("linear") else ""))
print("; ".join(parts))
PY
)
          # shellcheck disable=SC2086
          git add -- $new && git commit -q -m "Record $msg" -- $new && echo "$(date +%T) committed $msg"
        fi
      done
      # models the zoo queue delivered (hub/NAME new or replaced, complete): each with the regenerated index
      for name in $(git status --porcelain --untracked-files=normal -- hub | awk '{print $2}' | cut -d/ -f2 | sort -u); do
        case "$name" in .tmp-*|results.csv|"") continue ;; esac
        python3 scripts/zoo_queue.py published "$name" || continue
        xmoco-zoo list --write >/dev/null
        git add -A -- "hub/$name" hub/results.csv README.md
        git commit -q -m "Publish $name" -- "hub/$name" hub/results.csv README.md && echo "$(date +%T) published $name"
      done
      sleep 120
    done
    ;;
  status)
    tail -n 5 "$MAIN/runs/queue.log" 2>/dev/null || echo "no queue log yet"
    pgrep -af "recipes/pretrain.py|recipes/linear_eval.py" | sed 's/--config/\n    --config/' | head -4 || true
    ;;
  *)
    sed -n 2,12p "$0"; exit 2 ;;
esac
