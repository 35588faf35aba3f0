#!/usr/bin/env bash
# One of our notebooks, in smoke mode, through the real .NET Interactive kernel (the peer our kernel replaces): packs
# ResearchKit into feed/ and registers that folder as a NuGet source of this user for the run (README, "Other notebook
# hosts": what a user does once; removed again at exit when this script added it, since a source whose folder is gone, as a
# CI clone's is after the run, fails every later restore on the machine), installs Microsoft.dotnet-interactive where missing, and runs the notebook with nbclient
# (tests/jupyter/dotnet_interactive.py). Run by .ci/run; by hand:
#   bash tests/interactive.sh [NOTEBOOK]        (default: notebooks/rotnet-probe-by-block.ipynb)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
notebook=${1:-notebooks/rotnet-probe-by-block.ipynb}
version=1.0.712001   # the last release; the tool is deprecated upstream but still served (environment.md)
tools="${XDG_CACHE_HOME:-$HOME/.cache}/researchkit/dotnet-interactive-$version"
if [ ! -x "$tools/dotnet-interactive" ]; then
  dotnet tool install Microsoft.dotnet-interactive --version "$version" --tool-path "$tools" >/dev/null
fi
dotnet pack src/ResearchKit -c Release -o feed -nologo -v q >/dev/null
if ! dotnet nuget list source --format short | grep -qF "$PWD/feed"; then
  dotnet nuget remove source researchkit >/dev/null 2>&1 || true   # a feed registered from another checkout
  dotnet nuget add source "$PWD/feed" --name researchkit >/dev/null
  trap 'dotnet nuget remove source researchkit >/dev/null 2>&1 || true' EXIT
  echo "interactive: registered $PWD/feed as the NuGet source 'researchkit' for this run"
fi
# NuGet never replaces a package version it has extracted: drop the cached copy so this pack is the one loaded.
rm -rf "${NUGET_PACKAGES:-$HOME/.nuget/packages}/researchkit/1.0.0"
mkdir -p out/ci
name=$(basename "$notebook" .ipynb)
/usr/bin/python3 tests/jupyter/dotnet_interactive.py "$tools/dotnet-interactive" "$notebook" "out/ci/$name.dotnet-interactive.ipynb"

# The same notebook exported as a .NET 10 file-based app (`researchkit notebook export --to cs`) and run with `dotnet run`,
# on the same package: it must train and print the notebook's verdict.
app_folder=$(mktemp -d)
./researchkit notebook export "$notebook" --to cs -o "$app_folder/$name.cs" -p Smoke=true -p "ResultsFolder=$app_folder/results"
(cd "$app_folder" && dotnet run "$name.cs") > "out/ci/$name.exported.log" 2>&1 || { tail -30 "out/ci/$name.exported.log"; exit 1; }
grep -q "^- " "out/ci/$name.exported.log" || { echo "interactive: the exported program showed no verdict"; exit 1; }
echo "interactive: $name exported with --to cs ran with dotnet run ($(grep -c '^- ' "out/ci/$name.exported.log") verdict lines)"
