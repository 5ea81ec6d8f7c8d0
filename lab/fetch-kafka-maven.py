#!/usr/bin/env python3
"""Fetch the pinned Kafka jars listed in a kraftwerk maven manifest.

Usage:
  lab/fetch-kafka-maven.py --manifest roles/kafka/vars/maven-3.9.1.yml \
      --repo-url https://repo1.maven.org/maven2 \
      --dest ~/.cache/kraftwerk/kafka-3.9.1-maven/libs

For every entry of `kafka_maven_artifacts` it downloads
<repo>/<group as path>/<artifact>/<version>/<artifact>-<version>[-<classifier>].jar
to DEST/<artifact>-<version>[-<classifier>].jar, unless a file with the pinned
sha256 is already there. Each download goes to a temporary file, is checked
against the pinned sha256 and only then renamed into place. Nothing else in
DEST is touched. No transitive resolution is done: the manifest is the list.

Python 3 standard library only (the manifest's simple YAML is parsed here;
PyYAML is used instead when it is installed).
Exit status: 0 ok, 1 checksum mismatch or download failure, 2 bad manifest.
"""
import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request

KEYS = ("group", "artifact", "version", "sha256", "classifier")


def _scalar(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _strip_comment(line):
    # Remove a trailing ' #' comment that is not inside quotes.
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _parse_flow_map(text):
    # {k: v, k: v}: values in this manifest never contain ',', '{' or '}'.
    inner = text.strip()[1:-1]
    item = {}
    for part in inner.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition(":")
        if not sep:
            raise ValueError("bad flow mapping entry: %r" % part)
        item[key.strip()] = _scalar(value)
    return item


def parse_manifest_stdlib(text, var="kafka_maven_artifacts"):
    """Parse the list `var` of flat dicts, in flow ({...}) or block style."""
    items = None
    current = None
    item_indent = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if indent == 0:
            if items is not None:
                break  # next top-level key: list finished
            if re.match(r"^%s\s*:\s*$" % re.escape(var), body):
                items = []
            continue
        if items is None:
            continue
        try:
            if body.startswith("- "):
                item_indent = indent
                rest = body[2:].strip()
                if rest.startswith("{"):
                    items.append(_parse_flow_map(rest))
                    current = None
                else:
                    current = {}
                    items.append(current)
                    key, _, value = rest.partition(":")
                    current[key.strip()] = _scalar(value)
            elif current is not None and indent > item_indent and ":" in body:
                key, _, value = body.partition(":")
                current[key.strip()] = _scalar(value)
            else:
                raise ValueError("unexpected line")
        except ValueError as exc:
            raise ValueError("manifest line %d: %s: %r" % (lineno, exc, raw))
    if items is None:
        raise ValueError("variable %r not found in manifest" % var)
    return items


def load_manifest(path):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        import yaml  # optional
    except ImportError:
        return parse_manifest_stdlib(text)
    data = yaml.safe_load(text) or {}
    items = data.get("kafka_maven_artifacts")
    if items is None:
        raise ValueError("variable 'kafka_maven_artifacts' not found in manifest")
    return [{k: str(v) for k, v in it.items()} for it in items]


def validate(items):
    seen = set()
    for i, it in enumerate(items):
        for key in ("group", "artifact", "version", "sha256"):
            if not it.get(key):
                raise ValueError("entry %d (%s) lacks %r" % (i, it, key))
        unknown = set(it) - set(KEYS)
        if unknown:
            raise ValueError("entry %d (%s) has unknown keys %s" % (i, it, sorted(unknown)))
        if not re.fullmatch(r"[0-9a-f]{64}", it["sha256"].lower()):
            raise ValueError("entry %d (%s): sha256 is not 64 hex digits" % (i, it["artifact"]))
        name = jar_name(it)
        if name in seen:
            raise ValueError("duplicate jar %s" % name)
        seen.add(name)


def jar_name(it):
    cls = it.get("classifier")
    return "%s-%s%s.jar" % (it["artifact"], it["version"], "-" + cls if cls else "")


def coord(it):
    parts = [it["group"], it["artifact"], it["version"]]
    if it.get("classifier"):
        parts.append(it["classifier"])
    return ":".join(parts)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, dest_tmp, retries=3, timeout=60):
    last = None
    for attempt in range(1, retries + 1):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "kraftwerk-fetch/1"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest_tmp, "wb") as out:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            return
        except urllib.error.HTTPError as exc:
            last = exc
            if 400 <= exc.code < 500:
                break  # 404 etc.: retrying will not help
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(attempt)
    raise RuntimeError("download failed: %s: %s" % (url, last))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True, help="YAML file with kafka_maven_artifacts")
    ap.add_argument("--repo-url", default="https://repo1.maven.org/maven2",
                    help="Maven repository base URL (default: %(default)s)")
    ap.add_argument("--dest", required=True, help="directory for the jars (created if missing)")
    ap.add_argument("--quiet", "-q", action="store_true", help="only print errors and the summary")
    args = ap.parse_args(argv)

    try:
        items = load_manifest(args.manifest)
        validate(items)
    except (OSError, ValueError) as exc:
        print("ERROR: %s" % exc, file=sys.stderr)
        return 2

    dest = os.path.abspath(os.path.expanduser(args.dest))
    os.makedirs(dest, exist_ok=True)
    base = args.repo_url.rstrip("/")
    fetched = present = 0
    errors = []
    for it in items:
        name = jar_name(it)
        path = os.path.join(dest, name)
        want = it["sha256"].lower()
        if os.path.isfile(path):
            have = sha256_file(path)
            if have == want:
                present += 1
                if not args.quiet:
                    print("ok       %s" % name)
                continue
            print("WARNING: %s present with sha256 %s, expected %s: re-downloading"
                  % (name, have, want), file=sys.stderr)
        url = "%s/%s/%s/%s/%s" % (base, it["group"].replace(".", "/"), it["artifact"],
                                  it["version"], name)
        fd, tmp = tempfile.mkstemp(prefix=".%s." % name, suffix=".part", dir=dest)
        os.close(fd)
        try:
            download(url, tmp)
            have = sha256_file(tmp)
            if have != want:
                raise RuntimeError("SHA256 MISMATCH for %s (%s): got %s, manifest pins %s"
                                   % (coord(it), url, have, want))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            fetched += 1
            if not args.quiet:
                print("fetched  %s" % name)
        except RuntimeError as exc:
            errors.append(str(exc))
            print("ERROR: %s" % exc, file=sys.stderr)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    print("%d jars in manifest: %d already present, %d fetched, %d failed -> %s"
          % (len(items), present, fetched, len(errors), dest))
    if errors:
        print("FAILED artifacts:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
