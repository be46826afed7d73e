# What runs inside an R step's kernel (IRkernel): R's side of jupyter_flow/execution/in_kernel.py.
#
# The step notebook sources this file and calls .jf$begin(spec) before the step's cells and
# .jf$finish() after them; on an error the task runner calls .jf$snapshot(). Values come and go as
# files in the neutral format of jupyter_flow/store/neutral.py (JSON, read and written with jsonlite)
# under the task's folder: crossing/in/NAME.json (inputs, written by the runner), crossing/out/
# (outputs), crossing/failure/ (variables at a failure), with crossing/result-r.json or
# failure-r.json listing them. The runner stores them (see languages.collect). `.jf$load(run, step)`
# loads a failed R step's snapshot into an R session (source this file first).
# Files: R has no audit hooks, so the common readers and writers (spec$file_calls, from
# analysis_r.FILE_CALLS: read.csv, write.csv, readRDS, saveRDS, readLines, writeLines, file()...)
# are wrapped in an environment attached in front of their packages for the step's session; each
# notes the file it is given (its size and time at the first read) and calls the original. At the
# end, `python -m jupyter_flow.execution.crossing` turns the notes into the record's `files` (the
# files written stored, as a Python step's are) in crossing/files.json, and withholds the values
# written that hold a secret (see execution/crossing.py).
# Everything lives in the hidden environment .jf, so the step's own names are untouched.

.jf <- local({
  jf <- new.env()
  jf$spec <- NULL
  jf$what_crosses <- paste(
    "what can cross between languages: NULL, logical, integer, double and character vectors and",
    "matrices, factors, data.frames of those, and lists or named lists of these")
  jf$base_packages <- c("base", "stats", "utils", "methods", "graphics", "grDevices", "datasets", "tools",
                        "compiler", "grid", "parallel", "splines", "stats4", "tcltk")

  jf$begin <- function(spec_json) {
    if (!requireNamespace("jsonlite", quietly = TRUE))
      stop("jupyter_flow needs the R package jsonlite in this kernel: install.packages('jsonlite') ",
           "(Debian: apt-get install r-cran-jsonlite)", call. = FALSE)
    spec <- jsonlite::fromJSON(spec_json, simplifyVector = FALSE)
    jf$spec <- spec
    jf$trace_files(spec)
    folder <- file.path(spec$workdir, "crossing", "in")
    for (name in names(spec$inputs)) {
      ref <- spec$inputs[[name]]
      if (!is.null(ref$missing)) {
        message(sprintf("jupyter_flow: '%s' is missing: %s", name, ref$missing))
        next
      }
      assign(name, jf$read(file.path(folder, paste0(name, ".json"))), envir = globalenv())
    }
    fe <- spec$foreach
    if (!is.null(fe))
      assign(fe$item, get(fe$var, envir = globalenv())[[fe$index + 1]], envir = globalenv())
    invisible(NULL)
  }

  jf$finish <- function() {
    spec <- jf$spec
    folder <- file.path(spec$workdir, "crossing", "out")
    dir.create(folder, recursive = TRUE, showWarnings = FALSE)
    values <- list()
    warnings <- character(0)
    for (name in unlist(spec$writes)) {
      if (!exists(name, envir = globalenv(), inherits = FALSE)) next
      value <- get(name, envir = globalenv())
      readers <- unlist(spec$needed[[name]])
      why <- jf$try_write(value, file.path(folder, paste0(name, ".json")))
      if (is.null(why)) {
        values[[name]] <- jf$class_of(value)
      } else if (length(readers)) {
        stop(sprintf(paste("step '%s': '%s' cannot be stored: it is %s, and step %s reads it; %s.",
                           "Convert it in step '%s' (e.g. to a data.frame or a named list of numbers),",
                           "or create it in the step that uses it"),
                     spec$step, name, why, paste0("'", readers, "'", collapse = ", "), jf$what_crosses, spec$step),
             call. = FALSE)
      } else {
        warnings <- c(warnings, sprintf("'%s' (%s) cannot be stored; not stored (no later step reads it)", name, why))
      }
    }
    jf$listing("result-r.json", list(values = values, warnings = I(warnings), packages = jf$packages()))
    jf$files_used()
    invisible(NULL)
  }

  jf$snapshot <- function() {
    if (is.null(jf$spec)) return(invisible(NULL))
    folder <- file.path(jf$spec$workdir, "crossing", "failure")
    dir.create(folder, recursive = TRUE, showWarnings = FALSE)
    values <- list()
    unconvertible <- list()
    for (name in ls(globalenv())) {
      value <- get(name, envir = globalenv())
      why <- jf$try_write(value, file.path(folder, paste0(name, ".json")))
      if (is.null(why)) values[[name]] <- jf$class_of(value) else unconvertible[[name]] <- jf$class_of(value)
    }
    jf$listing("failure-r.json", list(values = values, unconvertible = unconvertible, packages = jf$packages()))
    jf$files_used()
    invisible(NULL)
  }

  # -- the files the step reads and writes ------------------------------------------------------------
  jf$trace_files <- function(spec) {
    jf$files <- list(read = new.env(), written = new.env())
    store <- if (grepl("^(file|local)://", spec$store) || !grepl("://", spec$store)) sub("^[a-z]+://", "", spec$store)
    jf$ignored <- paste0(normalizePath(c(spec$workdir, tempdir(), R.home(), .libPaths(), store), mustWork = FALSE), "/")
    if ("jupyter_flow:files" %in% search()) detach("jupyter_flow:files", character.only = TRUE)
    wrappers <- new.env()
    for (name in names(spec$file_calls)) {
      call <- spec$file_calls[[name]]
      assign(name, jf$traced(call[[1]], name, unlist(call[[2]]), call[[3]], call[[4]]), envir = wrappers)
    }
    attach(wrappers, name = "jupyter_flow:files", warn.conflicts = FALSE)
  }

  # `package::name`, noting first the file it is given (the argument `arg` of `params`, by name or position).
  jf$traced <- function(package, name, params, arg, kind) {
    wrapper <- function(...) NULL
    body(wrapper) <- bquote({
      .jf$saw_call(list(...), .(params), .(arg), .(kind))
      .(as.call(list(call("::", as.name(package), as.name(name)), quote(...))))
    })
    environment(wrapper) <- globalenv()
    wrapper
  }

  jf$saw_call <- function(args, params, arg, kind) {
    tryCatch({  # noting a file never breaks the step
      given <- if (is.null(names(args))) rep("", length(args)) else names(args)
      pick <- function(want) {
        if (want %in% given) return(args[[match(want, given)]])
        k <- match(want, setdiff(params, given))
        unnamed <- which(given == "")
        if (!is.na(k) && length(unnamed) >= k) args[[unnamed[k]]] else NULL
      }
      if (is.null(kind)) {  # file(description, open): the mode says; none opens it later (a reader or writer)
        open <- pick("open")
        open <- if (is.character(open) && length(open) == 1) open else ""
        if (grepl("r", open)) jf$saw(pick(arg), "read")
        if (grepl("[wa+]", open)) jf$saw(pick(arg), "write", append = grepl("a", open) && !grepl("\\+", open))
      } else {
        jf$saw(pick(arg), kind, append = isTRUE(pick("append")))
      }
    }, error = function(e) NULL)
    invisible(NULL)
  }

  jf$saw <- function(path, kind, append = FALSE) {
    if (inherits(path, "connection")) {
      info <- summary(path)
      if (!info$class %in% c("file", "gzfile", "bzfile", "xzfile")) return(invisible(NULL))
      path <- info$description
    }
    if (!is.character(path) || length(path) != 1 || is.na(path) || !nzchar(path) || grepl("://", path, fixed = TRUE))
      return(invisible(NULL))
    path <- path.expand(path)
    if (!startsWith(path, "/")) path <- file.path(getwd(), path)
    if (any(startsWith(paste0(path, "/"), jf$ignored))) return(invisible(NULL))
    read <- jf$files$read
    written <- jf$files$written
    if (kind == "read") {
      if (is.null(read[[path]]) && is.null(written[[path]])) {
        info <- file.info(path, extra_cols = FALSE)
        # the time as text: jsonlite writes at most 15 digits, too few for a time to the microsecond
        mtime <- if (is.na(info$mtime)) NA else sprintf("%.9f", as.numeric(info$mtime))
        read[[path]] <- list(size = info$size, mtime = mtime)  # NA, NA: not there
      }
    } else {
      before <- written[[path]]
      written[[path]] <- append && (is.null(before) || before)
    }
    invisible(NULL)
  }

  jf$files_used <- function() {
    spec <- jf$spec
    if (is.null(jf$files)) return(invisible(NULL))
    notes <- file.path(spec$workdir, "crossing", "files-r.json")
    payload <- list(store = spec$store, cwd = spec$cwd, secrets = I(as.character(unlist(spec$secrets))),
                    read = as.list(jf$files$read), written = as.list(jf$files$written))
    base::writeLines(jsonlite::toJSON(payload, auto_unbox = TRUE, null = "null", na = "null", digits = I(17)), notes)
    jf$files <- NULL
    library_path <- if (is.null(spec$python_library_path)) "" else spec$python_library_path
    status <- system2(spec$python, c("-m", "jupyter_flow.execution.crossing", shQuote(notes),
                                     shQuote(file.path(spec$workdir, "crossing", "files.json"))),
                      env = paste0("LD_LIBRARY_PATH=", shQuote(library_path)))
    if (status != 0) {  # nothing it wrote may be stored unchecked for secrets
      unlink(file.path(spec$workdir, "crossing", c("out", "failure")), recursive = TRUE)
      warning("jupyter_flow: the files this step used could not be recorded, nor its values checked for ",
              "secrets; they are not stored", call. = FALSE)
    }
    invisible(NULL)
  }

  # Load a failed R step's variables at its failure (those that converted) into this R session,
  # from a store on a local path: .jf$load("RUN_ID", "STEP"). Returns their names.
  jf$load <- function(run_id, step, index = 0, store = Sys.getenv("JUPYTER_FLOW_STORE")) {
    if (!nzchar(store)) stop("name the store: .jf$load(run_id, step, store = '/path/to/store')", call. = FALSE)
    store <- sub("^(file|local)://", "", store)
    # the task record names the folder of the attempt that stands (store/layout.py: attempt_key)
    task <- Sys.glob(file.path(store, "flows", "*", "runs", run_id, step, index, "task.json"))
    at <- if (length(task)) jsonlite::fromJSON(task[[1]], simplifyVector = FALSE)$files_at else NULL
    found <- c(if (!is.null(at)) file.path(store, at, "failure.json"),
               file.path(dirname(task), "failure.json"))  # (runs recorded before attempt folders)
    found <- found[file.exists(found)]
    if (!length(found)) stop(sprintf("no failure snapshot of %s[%s] in run %s under %s", step, index, run_id, store),
                             call. = FALSE)
    failure <- jsonlite::fromJSON(found[[1]], simplifyVector = FALSE)
    for (name in names(failure$variables)) {
      digest <- failure$variables[[name]]$neutral
      if (is.null(digest)) next
      assign(name, jf$read(file.path(store, "blobs", substr(digest, 1, 2), digest)), envir = globalenv())
    }
    invisible(names(failure$variables))
  }

  jf$packages <- function() {
    names <- setdiff(loadedNamespaces(), jf$base_packages)
    versions <- vapply(names, function(p) as.character(utils::packageVersion(p)), "")
    as.list(versions[order(names)])
  }

  jf$class_of <- function(x) paste(class(x), collapse = "/")

  jf$listing <- function(file, payload) {
    path <- file.path(jf$spec$workdir, "crossing", file)
    base::writeLines(jsonlite::toJSON(payload, auto_unbox = TRUE, null = "null", na = "null"), paste0(path, ".tmp"))
    file.rename(paste0(path, ".tmp"), path)
  }

  # -- the neutral format (jupyter_flow/store/neutral.py) --------------------------------------------------
  jf$read <- function(path) {
    doc <- jsonlite::fromJSON(path, simplifyVector = FALSE)
    jf$decode(doc$value)
  }

  jf$try_write <- function(value, path) {
    tryCatch({
      text <- jsonlite::toJSON(list(jupyter_flow_value = 1, value = jf$encode(value)), auto_unbox = TRUE,
                               null = "null", na = "null", digits = I(17))
      base::writeLines(text, path)
      NULL
    }, error = function(e) conditionMessage(e))
  }

  jf$elements <- function(values, cls) {
    conv <- switch(cls,
      logical = function(x) if (is.null(x)) NA else as.logical(x),
      integer = function(x) if (is.null(x)) NA_integer_ else as.integer(x),
      double = function(x) {
        if (is.null(x)) NA_real_
        else if (is.character(x)) switch(x, "NaN" = NaN, "Inf" = Inf, "-Inf" = -Inf, NA_real_)
        else as.double(x)
      },
      character = function(x) if (is.null(x)) NA_character_ else as.character(x))
    proto <- switch(cls, logical = NA, integer = NA_integer_, double = NA_real_, character = NA_character_)
    vapply(values, conv, proto, USE.NAMES = FALSE)
  }

  jf$decode <- function(v) {
    switch(v$type,
      null = NULL,
      vector = {
        x <- jf$elements(v$values, v$class)
        if (!is.null(v$names)) names(x) <- as.character(unlist(v$names))
        x
      },
      factor = {
        levels <- as.character(unlist(v$levels))
        codes <- vapply(v$codes, function(c) if (is.null(c)) NA_integer_ else as.integer(c), NA_integer_)
        factor(levels[codes], levels = levels)
      },
      matrix = matrix(jf$elements(v$values, v$class), nrow = v$dim[[1]], ncol = v$dim[[2]]),
      table = {
        columns <- lapply(v$columns, jf$decode)
        names(columns) <- vapply(v$columns, function(c) c$name, "")
        rows <- if (is.null(v$row_names)) c(NA_integer_, -as.integer(v$nrow)) else as.character(unlist(v$row_names))
        structure(columns, class = "data.frame", row.names = rows)
      },
      list = {
        items <- lapply(v$items, jf$decode)
        if (!is.null(v$names)) names(items) <- as.character(unlist(v$names))
        items
      },
      stop(sprintf("unknown value type '%s' in the neutral format", v$type), call. = FALSE))
  }

  jf$plain <- function(x) {
    is.null(attr(x, "class")) && typeof(x) %in% c("logical", "integer", "double", "character")
  }

  jf$values <- function(x) {
    x <- as.vector(unname(x))
    if (is.double(x) && any(is.nan(x) | is.infinite(x))) {
      return(lapply(x, function(e) {
        if (is.nan(e)) "NaN" else if (is.na(e)) NULL else if (is.infinite(e)) (if (e > 0) "Inf" else "-Inf") else e
      }))
    }
    I(x)
  }

  jf$column <- function(x, what) {
    if (is.factor(x)) return(list(type = "factor", levels = I(levels(x)), codes = jf$values(as.integer(x))))
    if (!jf$plain(x) || !is.null(dim(x)))
      stop(sprintf("%s of class %s", what, jf$class_of(x)), call. = FALSE)
    list(type = "vector", class = typeof(x), values = jf$values(x))
  }

  jf$encode <- function(x, what = "an R value") {
    if (is.null(x)) return(list(type = "null"))
    if (is.data.frame(x)) {
      columns <- lapply(names(x), function(n) c(list(name = n), jf$column(x[[n]], sprintf("a data.frame column '%s'", n))))
      out <- list(type = "table", nrow = nrow(x), columns = columns)
      rows <- attr(x, "row.names")
      if (is.character(rows)) out$row_names <- I(rows)
      return(out)
    }
    if (is.factor(x)) return(jf$column(x, what))
    if (is.array(x) && length(dim(x)) == 1 && identical(class(x), "array")) {  # tapply(), table(): a named vector
      names <- dimnames(x)[[1]]
      x <- as.vector(x)
      names(x) <- names
    }
    if (is.matrix(x) && typeof(x) %in% c("logical", "integer", "double", "character") &&
        identical(class(x), c("matrix", "array")))
      return(list(type = "matrix", class = typeof(x), dim = I(dim(x)), values = jf$values(x)))
    if (jf$plain(x) && is.null(dim(x))) {
      out <- jf$column(x, what)
      if (!is.null(names(x))) out$names <- I(names(x))
      return(out)
    }
    if (is.list(x) && is.null(attr(x, "class"))) {
      out <- list(type = "list", items = lapply(seq_along(x), function(i) jf$encode(x[[i]], sprintf("item %d", i))))
      if (!is.null(names(x))) out$names <- I(names(x))
      return(out)
    }
    stop(sprintf("%s of class %s", if (identical(what, "an R value")) "an R value" else what, jf$class_of(x)),
         call. = FALSE)
  }
  jf
})
