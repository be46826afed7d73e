"""What counts as a secret, and keeping secrets out of the store.

A secret is the value of an environment variable whose name says so (it contains KEY, SECRET, TOKEN,
PASSWORD or CREDENTIAL, in any case), or of one the notebook names (metadata `jupyter_flow.execution.secrets`,
or a `secret:NAME` tag), when that value is at least MIN_LENGTH (8) characters long: shorter values
("1", "true", "prod", "testing") are too common to remove from text without removing ordinary words.
Objects of known credential types (botocore's and boto3's sessions and credentials, requests' auth
objects...) are secrets whatever they hold; they are recognised by their class's qualified name,
so no credential library is imported here.

`Secrets` is built once per task from the environment: one compiled pattern of the values finds them
in text (`scrub` replaces them by REMOVED) and in the bytes of a value as it is pickled into a blob
(`save_value`: the value is pickled once, checked as it is written, and the blob is never stored if it
holds a secret), or of a file a step wrote as it is copied into one (`save_file`). Parameter values
given for a run are checked before it starts (`refuse_parameters`). Imports stay light: this module
runs in every step's kernel.
"""
from __future__ import annotations

import json
import os
import re
import shutil

from jupyter_flow.errors import FlowError
from jupyter_flow.store import blobs

REMOVED = "[secret removed]"
WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")
MIN_LENGTH = 8
# Credential types: {top-level package: class names}; an object whose class (or a base) is one of them,
# defined in a module of that package, is a credential (botocore.credentials.Credentials...).
CREDENTIAL_TYPES = {
    "botocore": {"Credentials", "RefreshableCredentials", "DeferredRefreshableCredentials", "ReadOnlyCredentials",
                 "Session"},
    "boto3": {"Session"},
    "requests": {"AuthBase"},  # HTTPBasicAuth, HTTPDigestAuth, HTTPProxyAuth and custom auth classes
    "httpx": {"Auth", "BasicAuth", "DigestAuth"},
    "aiohttp": {"BasicAuth"},
    "google": {"Credentials"},  # google.auth / google.oauth2: every Google credentials class
    "azure": {"AzureKeyCredential", "AzureNamedKeyCredential", "AzureSasCredential", "DefaultAzureCredential",
              "ClientSecretCredential", "CertificateCredential", "UsernamePasswordCredential"},
    "paramiko": {"PKey"},  # SSH private keys
}
# Class names found in a pickle stream (a credential object deep inside a value): those of the types
# above that only credentials bear (not "Session", not "Auth"), as pickle writes a short string.
_PICKLED_NAMES = sorted({"Credentials", "RefreshableCredentials", "DeferredRefreshableCredentials",
                         "ReadOnlyCredentials", "HTTPBasicAuth", "HTTPDigestAuth", "HTTPProxyAuth", "BasicAuth",
                         "DigestAuth", "AzureKeyCredential", "AzureNamedKeyCredential", "AzureSasCredential",
                         "ClientSecretCredential", "RSAKey", "ECDSAKey", "Ed25519Key"})


class Withheld(Exception):
    """A value was not stored because it is, contains or holds a secret; str(e) says why."""


def secret_name(name: str, extra=()) -> bool:
    """Whether environment variable `name` holds a secret (by its name, or named by the notebook)."""
    upper = name.upper()
    return name in extra or any(word in upper for word in WORDS)


class Secrets:
    """The secret values of one environment and the one pattern (text) or two (bytes) that find them."""

    def __init__(self, environ=None, extra=()):
        environ = os.environ if environ is None else environ
        self.names: dict[str, str] = {}  # value -> the (first) variable holding it
        for name, value in sorted(environ.items()):
            if secret_name(name, extra) and len(value.strip()) >= MIN_LENGTH:
                self.names.setdefault(value, name)
        values = sorted(self.names, key=len, reverse=True)  # the longest first: no half-removed secret
        self.text = re.compile("|".join(map(re.escape, values))) if values else None
        self.pickled = {b"\x8c" + bytes([len(n)]) + n.encode(): n for n in _PICKLED_NAMES}
        for value in self.names:
            self.pickled[value.encode(errors="surrogatepass")] = value
        words = sorted(self.pickled, key=len, reverse=True)
        self.bytes = re.compile(b"|".join(map(re.escape, words)))
        # A large buffer (array data, a long string) holds no class name, and an alternation is searched
        # at about 150 MB/s: there the values are found one by one (bytearray.find, GB/s), a slice at a time.
        self.encoded = {v.encode(errors="surrogatepass"): v for v in values}
        self.longest = len(words[0])

    def __bool__(self) -> bool:
        return bool(self.names)

    def scrub(self, text: str) -> str:
        """`text` with every secret value replaced by REMOVED."""
        return self.text.sub(REMOVED, text) if self.text is not None and text else text

    def found_in(self, data, large: bool = False) -> str | None:
        """Why the bytes `data` (a pickle stream; `large`: a big buffer in it) may not be stored, or None."""
        if large:
            return self._found_in_large(memoryview(data).cast("B"))
        m = self.bytes.search(data)
        if m is None:
            return None
        word = self.pickled[m.group()]
        if word in self.names:
            return f"contains the value of ${self.names[word]}"
        return f"holds a {word} object (credentials)"

    def _found_in_large(self, view: memoryview) -> str | None:
        if not self.encoded:
            return None
        keep = max(map(len, self.encoded)) - 1
        step, chunk = 1 << 22, bytearray()
        for start in range(0, len(view), step):
            chunk[:] = view[start:start + step + keep]  # copied into the same bytearray: no new pages
            for encoded, value in self.encoded.items():
                if chunk.find(encoded) >= 0:
                    return f"contains the value of ${self.names[value]}"
        return None

    def scrub_json(self, obj):
        """A JSON-like object (a record's error, a notebook) with the secrets removed from its strings."""
        if self.text is None:
            return obj
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, list):
            return [self.scrub_json(v) for v in obj]
        if isinstance(obj, dict):
            return {k: self.scrub_json(v) for k, v in obj.items()}
        return obj

    def scrub_document(self, text: str, is_json: bool = False) -> str:
        """`text` without its secrets; a JSON document (a notebook, a record) is scrubbed string by
        string, as a secret holding a quote or a newline is escaped there."""
        new = self.scrub(text)
        if is_json and self.text is not None:
            try:
                doc = json.loads(text)
            except ValueError:
                return new
            clean = self.scrub_json(doc)
            new = text if clean == doc else json.dumps(clean, indent=1, ensure_ascii=False) + "\n"
        return new

    def scrub_file(self, path: str) -> None:
        """Remove the secrets from a text file (a log) or a JSON file (a notebook), in place."""
        if self.text is None or not os.path.exists(path):
            return
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        new = self.scrub_document(text, path.endswith((".ipynb", ".json")))
        if new != text:
            tmp = f"{path}.scrub.tmp"
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(new)
            os.replace(tmp, path)


class ScrubbingWriter:
    """A text file that removes the secrets from what is written to it, line by line (a secret split
    across two writes of one line is still found); `close` writes what is left."""

    def __init__(self, f, secrets: Secrets):
        self.f, self.secrets, self.pending = f, secrets, ""

    def write(self, text: str) -> int:
        if self.secrets.text is None:
            return self.f.write(text)
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        if lines:
            self.f.write(self.secrets.scrub("\n".join(lines) + "\n"))
        return len(text)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        """Write what is left, and close the file."""
        if self.pending:
            self.f.write(self.secrets.scrub(self.pending))
            self.pending = ""
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_cache: dict = {}


def current(extra=()) -> Secrets:
    """The secrets of this process's environment now, plus the variables named in `extra` (the
    notebook's); compiled once for a given environment (once per task)."""
    extra = tuple(sorted(set(extra or ())))
    key = (extra, tuple(sorted((n, v) for n, v in os.environ.items() if secret_name(n, extra))))
    if key not in _cache:
        _cache.clear()
        _cache[key] = Secrets(extra=extra)
    return _cache[key]


def credential_type(value) -> str | None:
    """What `value` is if it is an object of a known credential type ("botocore.credentials.Credentials
    object (credentials)"), else None."""
    try:
        mro = type(value).__mro__
    except Exception:  # noqa: BLE001 - an odd object
        return None
    for cls in mro:
        module = getattr(cls, "__module__", None) or ""
        if getattr(cls, "__qualname__", None) in CREDENTIAL_TYPES.get(module.partition(".")[0], ()):
            known, own = f"{module}.{cls.__qualname__}", f"{mro[0].__module__}.{mro[0].__qualname__}"
            return f"{own} object (" + ("" if own == known else f"a {known}: ") + "credentials)"
    return None


def withheld(value, extra=(), found: Secrets | None = None) -> str | None:
    """Why `value` may not be stored: it is a credential object, or is or holds a secret value (of
    `found`; by default those of `current(extra)`) in its strings, containers or attributes (a few
    levels deep); None if it may. It does not pickle the value: to store one, call `save_value`,
    which checks the bytes as they are pickled."""
    return _withheld(value, found if found is not None else current(extra), 0)


def _withheld(value, secrets: Secrets, depth: int) -> str | None:
    kind = credential_type(value)
    if kind:
        return f"is a {kind}"
    if depth > 4:
        return None
    if isinstance(value, str):
        return secrets.found_in(value.encode(errors="surrogatepass")) if secrets else None
    if isinstance(value, (bytes, bytearray)):
        return secrets.found_in(value) if secrets else None
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        attributes = getattr(value, "__dict__", None)
        items = list(attributes.values()) if isinstance(attributes, dict) else []
    for item in items[:10_000]:
        reason = _withheld(item, secrets, depth + 1)
        if reason:
            return reason
    return None


class _CheckingWriter:
    """Passes a pickle stream on to `inner`, raising Withheld before any byte of a secret reaches it:
    it holds back the last (longest pattern - 1) bytes until it has seen what follows them."""

    def __init__(self, inner, secrets: Secrets):
        self.inner, self.secrets = inner, secrets
        self.held = b""
        self.keep = secrets.longest - 1

    @property
    def size(self) -> int:
        return self.inner.size + len(self.held)

    def _check(self, data, large: bool = False) -> None:
        reason = self.secrets.found_in(data, large)
        if reason:
            raise Withheld(reason)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        if n < 1 << 16:
            chunk = self.held + bytes(view)
            self._check(chunk)
        else:  # a large buffer: not copied; what straddles the held bytes and it is checked apart
            self._check(self.held + bytes(view[:self.keep]))
            self._check(view, large=True)
            self.inner.write(self.held)
            chunk = view
        cut = max(len(chunk) - self.keep, 0)
        self.inner.write(memoryview(chunk)[:cut])
        self.held = bytes(memoryview(chunk)[cut:])
        return n

    def close(self) -> None:
        self.inner.write(self.held)
        self.held = b""


def _save_checked(store, write, found: Secrets | None) -> tuple[str, int]:
    """`store.save_blob` of what `write(writer)` writes, checked as it is written (see _CheckingWriter)."""
    checking = _CheckingWriter(None, found if found is not None else current())

    def fill(writer):
        checking.inner = writer
        write(checking)
        checking.close()

    return store.save_blob(fill)


def save_value(store, value, found: Secrets | None = None) -> tuple[str, int]:
    """Store `value` as a blob, as `store.save_value` does (the same bytes and hash); returns (hash,
    size). Raises Withheld, storing nothing, if it is a credential object or its pickle holds a
    secret (of `found`; by default those of `current()`): the value is pickled once, checked as it
    is written."""
    kind = credential_type(value)
    if kind:
        raise Withheld(f"is a {kind}")

    return _save_checked(store, lambda writer: blobs.dump(value, writer), found)


def save_file(store, path: str, found: Secrets | None = None) -> tuple[str, int]:
    """Store the bytes of the file at `path` as a blob, as `store.save_file` does (a file a step
    wrote); (hash, size). Raises Withheld, storing nothing, if they hold a secret value (or a pickled
    credential object): checked as they are copied."""

    def write(writer):
        with open(path, "rb") as f:
            shutil.copyfileobj(f, writer, 1 << 20)

    return _save_checked(store, write, found)


def refuse_parameters(given, extra=()) -> None:
    """FlowError, before anything is written, for the first parameter value given for a run,
    `given` as (origin, name, value) triples (flow.params.given_values), that is or holds a secret of this
    environment, or that is text of MIN_LENGTH or more characters for a parameter whose name says
    secret: a run stores its parameters (its record, every step notebook)."""

    for origin, name, value in given:
        reason = withheld(value, extra)
        if reason:
            var = reason.partition("$")[2]
            fix = f"os.environ[{var!r}]" if var else "os.environ[...]"
            raise FlowError(f"{origin} {name}: the value {reason}; parameters are stored with the run and secrets "
                            f"never are: pass it through the environment and read it in the step that needs it ({fix})")
        if isinstance(value, str) and len(value.strip()) >= MIN_LENGTH and secret_name(str(name), extra):
            word = next((w for w in WORDS if w in str(name).upper()), None)
            says = f"has {word} in it" if word else "is named secret by the notebook"
            raise FlowError(f"{origin} {name}: the parameter's name {says}, so its value is a secret; parameters are "
                            f"stored with the run and secrets never are: export it ({name.upper()}=...) and read it "
                            f"in the step that needs it (os.environ[{name.upper()!r}]); if it is not a secret, "
                            "rename the parameter")
