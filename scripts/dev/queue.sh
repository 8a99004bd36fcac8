#!/usr/bin/env bash
# The development machine's run queues, from a pinned second checkout so that edits to this tree never change a
# running queue (the records still land in this tree):
#
#   bash scripts/dev/queue.sh start compare|recipe|lightly|zoo|all  # check out HEAD in ../wt-runs (detached), start
#                                                    # that queue (all: the four in that order, each when done)
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

kill_tree() {  # a process and all its descendants, children first
  local child
  for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}

case "${1:-}" in
  start)
    which=${2:?compare, recipe, lightly, zoo or all}
    if [ ! -d "$WT" ]; then git -C "$MAIN" worktree prune; git -C "$MAIN" worktree add -f --detach "$WT" HEAD >/dev/null; fi
    [ -e "$WT/runs" ] || ln -s "$MAIN/runs" "$WT/runs"
    git -C "$WT" checkout -q --detach "$(git -C "$MAIN" rev-parse HEAD)"
    # every queue reads and writes the working tree's records (the zoo derives its models from the others')
    export PYTHONPATH="$WT" XMOCO_MAIN="$MAIN" XMOCO_HUB_OUT="$MAIN/hub" \
      XMOCO_COMPARE_OUT="$MAIN/docs/results/methods_fmnist" XMOCO_RECIPE_OUT="$MAIN/docs/results/recipe_search"
    extra="${*:3}"
    case "$which" in
      compare) cmd="python scripts/compare_methods.py run $extra" ;;
      recipe) cmd="python scripts/recipe_search.py run $extra" ;;
      lightly) cmd="bash scripts/dev/lightly_curve.sh" ;;
      zoo) cmd="python scripts/zoo_queue.py run $extra" ;;
      # one after the other; a queue stopped (pause-after, stop) ends the chain
      all) cmd="python scripts/compare_methods.py run && python scripts/recipe_search.py run && bash scripts/dev/lightly_curve.sh && python scripts/zoo_queue.py run" ;;
      *) echo "unknown queue '$which': compare, recipe, lightly, zoo or all" >&2; exit 2 ;;
    esac
    cd "$WT"
    nohup bash -c "$cmd" >> "$MAIN/runs/queue.log" 2>&1 &
    echo "$which started (pid $!) at $(git -C "$WT" rev-parse --short HEAD); log: runs/queue.log"
    ;;
  pause-after)
    id=${2:?RECORD_ID}
    # a record of the comparison or the recipe search, or a model the zoo queue delivered to hub/ (published by
    # the queue: an older folder of the same name, which the zoo's model replaces, does not count)
    until ls "$MAIN"/docs/results/*/runs/"$id".json >/dev/null 2>&1 ||
      (cd "$MAIN" && python3 scripts/zoo_queue.py published "$id"); do sleep 20; done
    bash "$0" stop
    echo "paused after $id"
    ;;
  stop)
    pkill -f "scripts/dev/lightly_curve.sh" || true
    pkill -f "scripts/(compare_methods|recipe_search|zoo_queue).py run" || true
    pkill -f "vs_lightly.py --mode curve" || true
    pkill -f "benchmarks/cell_cost.py --threads 2 --table" || true   # the zoo's step timing
    # a zoo model's publishing: its evaluations are the script's children (a hand-run evaluation is left alone)
    for pid in $(pgrep -f "publish_fmnist.sh runs/zoo/" || true); do kill_tree "$pid"; done
    pkill -f "output_dir=runs/(compare|recipe|zoo)/" || true
    ;;
  commit-records)
    cd "$MAIN"
    REF=docs/results/lightly_curve/lightly_mocov2_resnet18_32px.json
    # the time-to-accuracy plot and its point-by-point comparison with lightly's curve, from hub/ as it stands
    time_to_accuracy() {
      [ -f "$REF" ] || return 0
      local cmd="xmoco-zoo plot zoo --out docs/images/zoo_accuracy_vs_minutes.png --reference $REF"
      local out
      out=$($cmd 2>/dev/null) || return 0   # no model with training minutes yet
      {
        echo "# Time to accuracy: the zoo against lightly's MoCo v2 on the same machine"
        echo
        echo "Written by \`bash scripts/dev/queue.sh commit-records\` after each published model, with"
        echo "\`$cmd\` (how to read it: [models.md](../models.md#the-index))."
        echo
        echo "![accuracy against training minutes](../images/zoo_accuracy_vs_minutes.png)"
        echo
        echo '```'
        echo "$out"
        echo '```'
      } > docs/results/time_to_accuracy.md
      git add -- docs/results/time_to_accuracy.md docs/images/zoo_accuracy_vs_minutes.png
      git commit -q -m "Time to accuracy against lightly's curve, $(date +%F)" -- \
        docs/results/time_to_accuracy.md docs/images/zoo_accuracy_vs_minutes.png && echo "$(date +%T) time to accuracy"
      return 0   # an unchanged plot has nothing to commit: not an error (the loop runs under set -e)
    }
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
          # the queue's page, rewritten from the records (table, verdicts, charts)
          case "$d" in
            *methods_fmnist*) report="scripts/compare_methods.py"
              pages="docs/results/methods_fmnist.md docs/images/methods_fmnist_seeds.png docs/images/amcl_forms_fmnist.png" ;;
            *) report="scripts/recipe_search.py"; pages="docs/results/recipe_search.md docs/images/recipe_search.png" ;;
          esac
          if python3 "$report" report >/dev/null 2>&1; then
            existing=""
            for f in $pages; do [ -e "$f" ] && existing="$existing $f"; done   # a chart appears with its data
            # shellcheck disable=SC2086
            if [ -n "$existing" ] && [ -n "$(git status --porcelain -- $existing)" ]; then
              git add -- $existing && git commit -q -m "Results page after $msg" -- $existing &&
                echo "$(date +%T) page updated"
            fi
          else
            echo "$(date +%T) $report report failed: run it by hand to see why"
          fi
        fi
      done
      # the peer library's reference curve, once finished
      if [ -n "$(git status --porcelain --untracked-files=all -- docs/results/lightly_curve)" ]; then
        git add -- docs/results/lightly_curve && git commit -q -m "lightly's MoCo v2 reference curve (scripts/dev/lightly_curve.sh)" -- docs/results/lightly_curve && echo "$(date +%T) committed the lightly curve"
        time_to_accuracy
      fi
      # the zoo's step costs, timed on its models' own setting before their trainings
      if [ -f docs/results/recipe_search/zoo_cost.json ] &&
        [ -n "$(git status --porcelain -- docs/results/recipe_search/zoo_cost.json)" ]; then
        git add -- docs/results/recipe_search/zoo_cost.json &&
          git commit -q -m "The zoo's step costs on its models' setting (benchmarks/cell_cost.py --table)" -- \
            docs/results/recipe_search/zoo_cost.json && echo "$(date +%T) committed the zoo's step costs"
      fi
      # models the zoo queue delivered (hub/NAME new or replaced, complete): each with the regenerated index
      for name in $(git status --porcelain --untracked-files=normal -- hub | awk '{print $2}' | cut -d/ -f2 | sort -u); do
        case "$name" in .tmp-*|results.csv|"") continue ;; esac
        python3 scripts/zoo_queue.py published "$name" || continue
        # a publication writes new weights: a card re-rendered by hand (no new weights) is its author's to commit
        [ -n "$(git status --porcelain --untracked-files=all -- "hub/$name/model.safetensors")" ] || continue
        xmoco-zoo list --write >/dev/null
        git add -A -- "hub/$name" hub/results.csv README.md docs/models.md
        git commit -q -m "Publish $name" -- "hub/$name" hub/results.csv README.md docs/models.md &&
          echo "$(date +%T) published $name"
        python3 scripts/zoo_queue.py retire || true   # the models it dominates leave hub/ (each commit says why)
        time_to_accuracy
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
