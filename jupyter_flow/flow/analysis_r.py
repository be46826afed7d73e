"""The names an R step reads and writes: a careful reading of R's tokens, not an R parser.

What it reads as a write of NAME (at the step's level, or inside `if`/`for`/`{}`/`local({...})`):
`NAME <- value`, `NAME = value` (outside a call's parentheses), `value -> NAME`, `NAME <<- value`
(also inside a function: it assigns the global), `assign("NAME", ...)`, `for (NAME in ...)`,
`rm(NAME)`, and changes of part of a value, which read it too: `NAME[i] <- v`, `NAME$col <- v`,
`NAME[[i]]$a <- v`, `names(NAME) <- v`, `attr(NAME, "a") <- v`.

A read is a name used before the step assigns it, except: the name after `$` or `@`, both
sides of `pkg::name`, a call's argument name (`f(n = 3)`), the package in
`library(pkg)`/`require(pkg)`, and the names in a formula (`y ~ x + z`: columns, not variables).
A function defined in the step (`f <- function(a) a * k`) reads the names its body uses that are
neither its arguments nor assigned in its body (`k`), unless the step itself assigns them.

Limits (R decides names at run time, which no reading of the text can follow):
- non-standard evaluation: `with(df, a + b)`, `subset(df, a > 1)`, dplyr's `mutate(df, z = x + y)`,
  `ggplot(aes(x, y))` read the columns `a`, `b`, `x`, `y`: they count as reads, which only matter
  when an earlier step writes a variable of that name (then the edge is a needless one, never a
  missing one);
- names built at run time: `assign(paste0("x", i), ...)`, `get("x")`, `eval(parse(text = ...))`,
  `list2env(...)`, `load("file.RData")`, `attach(...)`, `source("other.R")` are not seen;
- writes into other environments (`e$x <- 1` is a change of `e`; `assign("x", 1, envir = e)`
  counts as a write of `x`).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

KEYWORDS = frozenset({"if", "else", "repeat", "while", "function", "for", "in", "next", "break", "TRUE", "FALSE",
                      "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "NA_complex_"})
_TOKEN = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?P<nl>\n)
  | (?P<space>[ \t\r\f]+)
  | (?P<raw>[rR](?P<rq>["'])(?P<dashes>-*)(?P<open>[(\[{]))
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<bq>`(?:[^`\\]|\\.)*`)
  | (?P<num>0[xX][0-9a-fA-F]+[Li]?|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[Li]?)
  | (?P<name>(?:[^\W\d_]|\.(?![0-9]))[\w.]*|\.)
  | (?P<op><<-|->>|<-|->|<=|>=|==|!=|&&|\|\||:::|::|\|>|%[^%\n]*%|\\|[-+*/^<>=!&|~?:$@,;()\[\]{}])
""", re.VERBOSE | re.DOTALL)
_CLOSE = {"(": ")", "[": "]", "{": "}"}
_CONTINUES = {"+", "-", "*", "/", "^", "<", ">", "<=", ">=", "==", "!=", "&", "&&", "|", "||", "!", "~", "<-", "<<-",
              "=", "->", "->>", "|>", ",", "$", "@", ":", "::", ":::", "?"}
_LIBRARY = {"library", "require", "requireNamespace", "loadNamespace"}


@dataclass
class Token:
    kind: str  # name, str, num, op, nl
    value: str
    pos: int


@dataclass
class Usage:
    """What an R step does with names; the fields dag reads (as those of analysis.Usage)."""
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)  # library(...) / require(...)
    functions: list[str] = field(default_factory=list)  # names bound to a function defined here
    files_read: list[str] = field(default_factory=list)  # literal paths given to FILE_CALLS (as written)
    files_written: list[str] = field(default_factory=list)


# The R functions whose files an R step is seen to read and write, both before it runs (a literal path
# given to one: `read.csv("data.csv")`) and while it runs (in_kernel.R wraps each in the step's
# session): name -> (package, its leading parameters in order, the one naming the file, "read" or
# "write"; None for file(), whose `open` mode says). A path may also be a connection (file("x")).
FILE_CALLS = {
    **{name: ("utils", ["file"], "file", "read") for name in ("read.csv", "read.csv2", "read.delim", "read.table")},
    **{name: ("utils", ["x", "file"], "file", "write") for name in ("write.csv", "write.csv2")},
    "write.table": ("utils", ["x", "file", "append"], "file", "write"),
    "readRDS": ("base", ["file"], "file", "read"),
    "saveRDS": ("base", ["object", "file"], "file", "write"),
    "readLines": ("base", ["con"], "con", "read"),
    "writeLines": ("base", ["text", "con"], "con", "write"),
    "file": ("base", ["description", "open"], "description", None),
}


class RSyntaxError(SyntaxError):
    pass


def tokenize(source: str) -> list[Token]:
    tokens, i = [], 0
    while i < len(source):
        m = _TOKEN.match(source, i)
        if m is None:
            line = source.count("\n", 0, i) + 1
            raise RSyntaxError(f"unexpected character {source[i]!r} on line {line}")
        kind = m.lastgroup if m.lastgroup not in ("rq", "dashes", "open") else "raw"
        if m.group("raw"):
            close = _CLOSE[m.group("open")] + m.group("dashes") + m.group("rq")
            end = source.find(close, m.end())
            if end < 0:
                raise RSyntaxError(f"raw string not closed on line {source.count(chr(10), 0, i) + 1}")
            tokens.append(Token("str", source[m.end():end], i))
            i = end + len(close)
            continue
        text = m.group()
        if kind == "str":
            tokens.append(Token("str", _unquote(text), i))
        elif kind == "bq":
            tokens.append(Token("name", text[1:-1], i))
        elif kind in ("num", "name", "op"):
            tokens.append(Token("name" if kind == "name" and text not in KEYWORDS else
                                "kw" if kind == "name" else kind, text, i))
        elif kind == "nl":
            tokens.append(Token("nl", "\n", i))
        i = m.end()
    _check_brackets(tokens, source)
    return tokens


def _unquote(text: str) -> str:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text[1:-1]


def _check_brackets(tokens: list[Token], source: str) -> None:
    stack = []
    for t in tokens:
        if t.kind == "op" and t.value in _CLOSE:
            stack.append(t)
        elif t.kind == "op" and t.value in _CLOSE.values() and (not stack or _CLOSE[stack.pop().value] != t.value):
            raise RSyntaxError(f"unmatched {t.value!r} on line {source.count(chr(10), 0, t.pos) + 1}")
    if stack:
        raise RSyntaxError(f"{stack[-1].value!r} on line {source.count(chr(10), 0, stack[-1].pos) + 1} is never "
                           "closed")


def analyze(sources: list[str]) -> Usage:
    """The reads (in order, before the step assigns them) and writes of the R code in `sources`
    (one string per cell). Raises RSyntaxError on unbalanced brackets or an unclosed string."""
    tokens = []
    for source in sources:
        tokens += tokenize(source) + [Token("nl", "\n", -1)]
    scope = _Scope(set())
    _Reader(tokens, scope).block(0, len(tokens))
    usage = Usage(packages=scope.packages, functions=scope.functions)
    usage.reads = list(scope.reads) + [n for n in scope.free if n not in scope.written and n not in scope.reads]
    usage.writes = list(scope.writes)
    for path, kind in _files(tokens):
        if kind == "read" and path not in usage.files_read + usage.files_written:
            usage.files_read.append(path)
        elif kind == "write" and path not in usage.files_written:
            usage.files_written.append(path)
    return usage


def _files(tokens: list[Token]) -> list[tuple[str, str]]:
    """(path, "read" or "write") of each call of FILE_CALLS given a literal path, in order; its
    arguments matched as R matches them (by name, then the unnamed ones by position)."""
    found = []
    for k, tok in enumerate(tokens[:-1]):
        before = tokens[k - 1].value if k else ""
        if tok.kind != "name" or tok.value not in FILE_CALLS or tokens[k + 1].value != "(" or before in ("$", "@"):
            continue
        _, params, target, kind = FILE_CALLS[tok.value]
        args = _arguments(tokens, k + 1)
        path = _argument(args, params, target)
        if kind is None:  # file(path, open): a mode with r reads, with w or a writes; none opens it later
            mode = _argument(args, params, "open") or ""
            found += [(path, "read")] * ("r" in mode) + [(path, "write")] * bool({"w", "a", "+"} & set(mode))
        else:
            found.append((path, kind))
    return [(path, kind) for path, kind in found if isinstance(path, str) and path and "://" not in path]


def _depth(tok: Token, depth: int) -> int:
    """The bracket depth after `tok`: one more after an opening bracket, one less after a closing one
    (-1: it closed the group the walk started in)."""
    if tok.kind == "op" and tok.value in _CLOSE:
        return depth + 1
    if tok.kind == "op" and tok.value in _CLOSE.values():
        return depth - 1
    return depth


def _arguments(tokens: list[Token], open_paren: int) -> list[tuple[str, str | None]]:
    """The arguments of the call whose '(' is at `open_paren`: (name or "", the literal string it is or None)."""
    args, current, depth = [], [], 0
    for tok in tokens[open_paren + 1:]:
        if tok.kind == "nl":
            continue
        depth = _depth(tok, depth)
        if depth < 0:
            break
        if depth == 0 and tok.value == ",":
            args.append(current)
            current = []
            continue
        current.append(tok)
    args.append(current)
    out = []
    for arg in args:
        named = len(arg) >= 2 and arg[0].kind in ("name", "str") and arg[1].value == "="
        name, rest = (arg[0].value, arg[2:]) if named else ("", arg)
        if len(rest) >= 3 and rest[0].value in ("file", "gzfile") and rest[1].value == "(" and rest[2].kind == "str":
            rest = rest[2:3]  # a connection to a literal path: readLines(file("notes.txt"))
        literal = rest[0].value if len(rest) == 1 and rest[0].kind == "str" else None
        if named or rest:
            out.append((name, literal))
    return out


def _argument(args: list[tuple[str, str | None]], params: list[str], want: str) -> str | None:
    """The literal value of parameter `want`, given by name or by position among the unnamed arguments."""
    names = [name for name, _ in args]
    if want in names:
        return args[names.index(want)][1]
    free = [p for p in params if p not in names]
    unnamed = [value for name, value in args if not name]
    k = free.index(want) if want in free else len(unnamed)
    return unnamed[k] if k < len(unnamed) else None


class _Scope:
    def __init__(self, bound: set[str], function: bool = False):
        self.written = set(bound)  # assigned so far (a function's arguments to begin with)
        self.reads: dict[str, None] = {}
        self.writes: dict[str, None] = {}
        self.free: dict[str, None] = {}  # read by functions defined here (at call time)
        self.globals: dict[str, None] = {}  # <<- targets inside a function
        self.function = function
        self.packages: list[str] = []
        self.functions: list[str] = []

    def read(self, name: str) -> None:
        if name not in self.written:
            self.reads.setdefault(name)

    def write(self, name: str) -> None:
        self.written.add(name)
        self.writes.setdefault(name)


class _Reader:
    def __init__(self, tokens: list[Token], scope: _Scope):
        self.t, self.scope = tokens, scope

    def match(self, i: int) -> int:
        """Index of the bracket closing the one at i."""
        depth = 0
        for j in range(i, len(self.t)):
            if self.t[j].kind == "op" and self.t[j].value in _CLOSE:
                depth += 1
            elif self.t[j].kind == "op" and self.t[j].value in _CLOSE.values():
                depth -= 1
                if depth == 0:
                    return j
        return len(self.t) - 1

    def block(self, i: int, j: int) -> None:
        """Statements in t[i:j], one after the other."""
        start, depth = i, 0
        for k in range(i, j):
            tok = self.t[k]
            if tok.kind == "op" and tok.value in _CLOSE:
                depth += 1
            elif tok.kind == "op" and tok.value in _CLOSE.values():
                depth -= 1
            elif depth == 0 and (tok.value == ";" or tok.kind == "nl" and not self._continues(start, k)):
                self.statement(start, k)
                start = k + 1
        self.statement(start, j)

    def _continues(self, start: int, k: int) -> bool:
        last = next((t for t in reversed(self.t[start:k]) if t.kind != "nl"), None)
        return last is not None and last.kind == "op" and last.value in _CONTINUES

    def statement(self, i: int, j: int) -> None:
        """One statement: its reads happen before its assignments (`x <- x + 1` reads x)."""
        reads, writes, formula = [], [], self._formula_spans(i, j)
        k, depth = i, 0  # depth: parentheses and brackets within the statement
        while k < j:
            tok = self.t[k]
            prev = self.t[k - 1] if k > i else None
            nxt = self.t[k + 1] if k + 1 < j else None
            if tok.kind == "kw" and tok.value == "function" or tok.kind == "op" and tok.value == "\\":
                k = self.function(k, j, writes)
                continue
            if tok.kind == "op" and tok.value == "{":
                end = self.match(k)
                self._flush(reads, writes)
                reads, writes = [], []
                self.block(k + 1, end)
                k = end + 1
                continue
            if tok.kind == "op" and tok.value in ("(", "["):
                depth += 1
            elif tok.kind == "op" and tok.value in (")", "]"):
                depth -= 1
            elif tok.kind == "op" and tok.value in ("<-", "<<-") or tok.value == "=" and depth == 0 and \
                    tok.kind == "op":
                target = self._target(i, k)
                if target:
                    name, partial, at = target
                    reads[:] = [r for r in reads if r[1] != at]
                    if partial:
                        reads.append((name, at))
                    writes.append((name, tok.value == "<<-"))
            elif tok.kind == "op" and tok.value in ("->", "->>") and nxt is not None and nxt.kind == "name":
                writes.append((nxt.value, tok.value == "->>"))
                k += 2
                continue
            elif tok.kind == "name":
                after_op = prev is not None and prev.kind == "op" and prev.value in ("$", "@", "::", ":::")
                named_arg = nxt is not None and nxt.value == "=" and nxt.kind == "op" and depth > 0
                if nxt is not None and nxt.kind == "op" and nxt.value in ("::", ":::"):
                    k += 3 if k + 2 < j and self.t[k + 2].kind == "name" else 1
                    continue
                if tok.value in _LIBRARY and nxt is not None and nxt.value == "(":
                    end = self.match(k + 1)
                    arg = self.t[k + 2] if k + 2 < end else None
                    if arg is not None and arg.kind in ("name", "str"):
                        self.scope.packages.append(arg.value)
                    k = end + 1
                    continue
                if tok.value in ("assign", "rm") and nxt is not None and nxt.value == "(":
                    writes += self._call_writes(tok.value, k + 1)
                if not after_op and not named_arg and not any(a <= k < b for a, b in formula):
                    reads.append((tok.value, k))
            elif tok.kind == "kw" and tok.value == "for" and nxt is not None and nxt.value == "(" and k + 2 < j \
                    and self.t[k + 2].kind == "name":
                self.scope.write(self.t[k + 2].value)  # bound before the loop's body runs
                depth += 1  # the loop's `(`
                k += 3
                continue
            k += 1
        self._flush(reads, writes)

    def _flush(self, reads: list, writes: list) -> None:
        for name, _ in reads:
            self.scope.read(name)
        for name, to_global in writes:
            if to_global and self.scope.function:
                self.scope.globals.setdefault(name)
            else:
                self.scope.write(name)

    def _target(self, start: int, k: int):
        """(name, partial, token index) assigned by the operator at k: the base name of the left side
        (`x`, `x[i]`, `x$a`, `names(x)`); partial when only part of it changes."""
        j = k - 1
        partial = False
        while j >= start:
            tok = self.t[j]
            if tok.kind == "op" and tok.value in ("]", ")"):
                opening = self._opening(j, start)
                if opening is None:
                    return None
                if tok.value == ")" and opening - 1 >= start and self.t[opening - 1].kind == "name":
                    # a replacement function: names(x) <- v changes x
                    inner = self.t[opening + 1] if opening + 1 < j else None
                    return (inner.value, True, opening + 1) if inner is not None and inner.kind == "name" else None
                partial, j = True, opening - 1
            elif tok.kind in ("name", "str") and j - 1 >= start and self.t[j - 1].kind == "op" and \
                    self.t[j - 1].value in ("$", "@"):
                partial, j = True, j - 2
            elif tok.kind == "name":
                before = self.t[j - 1] if j - 1 >= start else None
                if before is not None and before.kind == "op" and before.value not in (",", "(", ")", ";", "{"):
                    return None  # `a + b <- ...` is no assignment we know
                return tok.value, partial, j
            elif tok.kind == "str" and j == k - 1:
                return tok.value, False, j  # "x" <- 1
            else:
                return None
        return None

    def _opening(self, close: int, start: int) -> int | None:
        depth = 0
        for j in range(close, start - 1, -1):
            tok = self.t[j]
            if tok.kind == "op" and tok.value in _CLOSE.values():
                depth += 1
            elif tok.kind == "op" and tok.value in _CLOSE:
                depth -= 1
                if depth == 0:
                    return j
        return None

    def _call_writes(self, name: str, open_paren: int) -> list:
        end = self.match(open_paren)
        args = self.t[open_paren + 1:end]
        if name == "assign":
            return [(args[0].value, False)] if args and args[0].kind == "str" else []
        found, depth = [], 0  # rm(a, b): the names given bare, not list = ...
        for idx, tok in enumerate(args):
            if tok.kind == "op" and tok.value in _CLOSE:
                depth += 1
            elif tok.kind == "op" and tok.value in _CLOSE.values():
                depth -= 1
            elif depth == 0 and tok.kind in ("name", "str"):
                nxt = args[idx + 1] if idx + 1 < len(args) else None
                if nxt is None or nxt.value == ",":
                    found.append((tok.value, False))
        return found

    def _formula_spans(self, i: int, j: int) -> list[tuple[int, int]]:
        """Token ranges of formulas: the argument (or statement) holding a `~`."""
        spans = []
        for k in range(i, j):
            if self.t[k].kind == "op" and self.t[k].value == "~":
                spans.append((self._edge(k, i, -1, (",", "<-", "=", "<<-")), self._edge(k, j, 1, (",",))))
        return spans

    def _edge(self, k: int, limit: int, step: int, stops: tuple[str, ...]) -> int:
        """Where the argument holding token k ends, walking back (step -1) or forward (+1) to `limit`:
        at a bracket that closes around it, or at one of `stops` outside any bracket."""
        pos, depth = k, 0
        inward, outward = (_CLOSE.values(), _CLOSE) if step < 0 else (_CLOSE, _CLOSE.values())
        while pos > limit if step < 0 else pos < limit:
            tok = self.t[pos - 1] if step < 0 else self.t[pos]
            if tok.kind == "op" and tok.value in inward:
                depth += 1
            elif tok.kind == "op" and tok.value in outward:
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and tok.kind == "op" and tok.value in stops:
                break
            pos += step
        return pos

    def function(self, k: int, j: int, writes: list) -> int:
        """A function definition at k: its arguments and body are its own scope; the names its body
        reads from outside become the step's reads (at call time); `<<-` in it writes the step's."""
        if k + 1 >= len(self.t) or self.t[k + 1].value != "(":
            return k + 1
        close = self.match(k + 1)
        params, depth = set(), 0
        for idx in range(k + 2, close):
            tok = self.t[idx]
            depth = _depth(tok, depth)
            if depth == 0 and tok.kind == "name" and self.t[idx - 1].value in ("(", ","):
                params.add(tok.value)
        body = close + 1
        while body < j and self.t[body].kind == "nl":
            body += 1
        if body < j and self.t[body].value == "{":
            end = self.match(body) + 1
        else:
            end, depth = body, 0
            while end < j:
                tok = self.t[end]
                depth = _depth(tok, depth)
                ends = tok.value == "," or tok.kind == "nl" and not self._continues(body, end)
                if depth < 0 or depth == 0 and ends:
                    break
                end += 1
        inner = _Scope(params, function=True)
        _Reader(self.t, inner).block(body, end)
        for name in [*inner.reads, *inner.free]:
            if name not in inner.written:
                self.scope.free.setdefault(name)
        writes += [(name, True) for name in inner.globals]
        self.scope.packages += inner.packages
        before = self.t[k - 3] if k >= 3 else None
        if k >= 2 and self.t[k - 1].value in ("<-", "<<-", "=") and self.t[k - 2].kind == "name" and \
                (before is None or before.kind == "nl" or before.value in (";", "{")):
            self.scope.functions.append(self.t[k - 2].value)
        return end


_R_LITERALS = {"TRUE": True, "T": True, "FALSE": False, "F": False, "NULL": None}


def parameters(source: str) -> dict[str, tuple[object, str, str]]:
    """{name: (value, type, source)} of an R parameters cell's lines `name <- literal` (or `=`):
    numbers, strings, TRUE/FALSE and NULL are values; anything else is an "expression"."""
    found = {}
    for line in source.splitlines():
        m = re.match(r"^\s*([A-Za-z.][A-Za-z0-9._]*)\s*(?:<-|=)\s*(.+?)\s*(?:#.*)?$", line)
        if not m:
            continue
        name, rhs = m.groups()
        value, kind = None, "expression"
        if rhs in _R_LITERALS:
            value = _R_LITERALS[rhs]
            kind = type(value).__name__
        else:
            try:
                tokens = tokenize(rhs)
            except RSyntaxError:
                tokens = []
            sign = tokens[0].value if len(tokens) == 2 and tokens[0].value in ("-", "+") else ""
            tokens = tokens[1:] if sign else tokens
            if len(tokens) == 1 and tokens[0].kind == "str" and not sign:
                value, kind = tokens[0].value, "str"
            elif len(tokens) == 1 and tokens[0].kind == "num":
                text = tokens[0].value
                try:
                    value = int(text[:-1]) if text.endswith("L") else float(text) if any(c in text for c in ".eE") \
                        else int(text, 0)
                    value = -value if sign == "-" else value
                    kind = type(value).__name__
                except ValueError:
                    pass
        found[name] = (value, kind, rhs)
    return found
