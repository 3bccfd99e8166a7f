# corpus.awk — joins apt's Translation-en long descriptions with its Packages index into JSON lines:
#
#   {"key": PACKAGE, "title": SHORT DESCRIPTION, "text": LONG DESCRIPTION, "section": SECTION, "tags": [DEBTAGS]}
#
# Usage: awk -f corpus.awk PACKAGES... phase=2 TRANSLATIONS...   (files already decompressed; the `phase=2`
# operand is an awk variable assignment that takes effect between the two kinds of input). Both are Debian
# control files: stanzas separated by blank lines, continuation lines starting with a space. A Translation-en
# stanza (Package, Description-md5, Description-en) takes its section and debtags from the Packages stanza of
# the same package and description checksum, else from any Packages stanza of that package, else none (a
# package of another architecture). The same (package, checksum) listed by several suites (bookworm and
# bookworm-security) is written once. The long description keeps its line breaks; a " ." line becomes the
# blank line between paragraphs, as in Debian policy's description format. dpkg's status file (installed
# packages) works as both inputs: `awk -f corpus.awk /var/lib/dpkg/status phase=2 /var/lib/dpkg/status`.
# POSIX awk (mawk, gawk, busybox); the replacement "&&" doubles a backslash portably.

BEGIN { RS = ""; FS = "\n"; if (phase == "") phase = 1 }

# The value of field `name` in the current stanza; continuation lines are appended after "\n" with their
# leading space kept.
function field(name,    i, v, n, found) {
  v = ""; found = 0; n = length(name) + 1
  for (i = 1; i <= NF; i++) {
    if (found) {
      if (substr($i, 1, 1) == " " || substr($i, 1, 1) == "\t") { v = v "\n" $i; continue }
      break
    }
    if (substr($i, 1, n) == name ":") { v = substr($i, n + 1); sub(/^[ \t]+/, "", v); found = 1 }
  }
  return v
}

# A JSON string literal: escapes backslash, quote and control characters (UTF-8 passes through).
function json(s) {
  gsub(/\\/, "&&", s); gsub(/"/, "\\\"", s); gsub(/\t/, "\\t", s); gsub(/\r/, "\\r", s)
  gsub(/\n/, "\\n", s); gsub(/[\001-\037]/, " ", s)
  return "\"" s "\""
}

# Packages stanzas: remember section and debtags per (package, description checksum) and per package.
phase == 1 {
  pkg = field("Package"); md5 = field("Description-md5")
  if (pkg == "") next
  tags = field("Tag"); gsub(/[ \t\n]+/, "", tags); sec = field("Section")
  section[pkg, md5] = sec; tag[pkg, md5] = tags
  if (!(pkg in psection) || (ptag[pkg] == "" && tags != "")) { psection[pkg] = sec; ptag[pkg] = tags }
  next
}

# Translation-en stanzas: one JSON line per (package, checksum).
phase == 2 {
  pkg = field("Package"); md5 = field("Description-md5"); d = field("Description-en")
  if (d == "") d = field("Description") # dpkg's status file: the description in the same stanza
  if (pkg == "" || d == "" || ((pkg, md5) in seen)) next
  seen[pkg, md5] = 1
  if ((pkg, md5) in section) { sec = section[pkg, md5]; tags = tag[pkg, md5] }
  else if (pkg in psection) { sec = psection[pkg]; tags = ptag[pkg] }
  else { sec = ""; tags = "" }
  nl = index(d, "\n")
  if (nl == 0) { title = d; body = "" } else { title = substr(d, 1, nl - 1); body = substr(d, nl + 1) }
  sub(/[ \t]+$/, "", title)
  n = split(body, lines, "\n"); text = ""
  for (i = 1; i <= n; i++) {
    l = lines[i]; sub(/^ /, "", l); sub(/[ \t]+$/, "", l)
    if (l == ".") l = ""
    text = text (i > 1 ? "\n" : "") l
  }
  out = "{\"key\": " json(pkg) ", \"title\": " json(title) ", \"text\": " json(text) ", \"section\": " json(sec) ", \"tags\": ["
  m = split(tags, t, ",")
  for (i = 1; i <= m; i++) out = out (i > 1 ? ", " : "") json(t[i])
  print out "]}"
}
