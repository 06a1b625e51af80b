# SPDX-License-Identifier: Apache-2.0
# Shell helpers the service benchmarks share (tests/bench/ingest.sh, detector.sh, metering.sh);
# sourced, not run.

# field FILE KEY: the value of KEY in the JSON object in FILE.
field() { python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).read())[sys.argv[2]])" "$1" "$2"; }
# median: the median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# free_port: a TCP port free on loopback now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# write_section OUT NAME SECTION_FILE: replaces the text between <!-- NAME:begin ... --> and
# <!-- NAME:end --> in OUT with SECTION_FILE (which carries both markers), or appends it; then
# prints it.
write_section() {
	python3 - "$1" "$2" "$3" <<'PY'
import re, sys
out, name, sec = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
try:
    doc = open(out).read()
except FileNotFoundError:
    doc = "# Benchmarks\n"
pat = re.compile(r"<!-- " + re.escape(name) + r":begin.*?<!-- " + re.escape(name) + r":end -->\n?", re.S)
doc = pat.sub(lambda m: sec, doc) if pat.search(doc) else doc.rstrip("\n") + "\n\n" + sec
open(out, "w").write(doc)
PY
	cat "$3"
}
