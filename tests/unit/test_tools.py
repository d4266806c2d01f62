"""The worker's tools: happy paths, sandbox refusals, and run_tool's error results."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from crewbox.errors import ToolError
from crewbox.llm.base import ToolResultBlock, ToolUseBlock
from worker.tools import ALL_TOOLS, Sandbox, run_tool, select_tools
from worker.tools.base import input_schema
from worker.tools.bash import BashTool, command_allowed
from worker.tools.glob import compile_glob

SECRET = "top secret outside text"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the sandbox holding ``secret.txt``."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET + "\n")
    return folder


@pytest.fixture
def sandbox(out: Path, workspace: Path) -> Sandbox:
    return Sandbox(cwd=out, read_only=[workspace])


def call(sandbox: Sandbox, name: str, **input: Any) -> ToolResultBlock:
    """Run tool ``name`` with ``input`` through run_tool, every tool enabled."""
    block = ToolUseBlock(id="toolu_1", name=name, input=input)
    return run_tool(block, list(ALL_TOOLS.values()), sandbox)


def ok(result: ToolResultBlock) -> str:
    assert not result.is_error, result.content
    return result.content


def refused(result: ToolResultBlock) -> str:
    assert result.is_error, result.content
    assert "\n" not in result.content
    return result.content


# --- Sandbox -------------------------------------------------------------------------------


def test_resolve_relative_path_lands_in_cwd(sandbox: Sandbox, out: Path) -> None:
    assert sandbox.resolve("notes/a.md") == out.resolve() / "notes" / "a.md"


def test_resolve_allows_workspace_by_absolute_path(sandbox: Sandbox, workspace: Path) -> None:
    assert sandbox.resolve(str(workspace / "x.txt")) == workspace.resolve() / "x.txt"


@pytest.mark.parametrize("path", ["../outside/secret.txt", "sub/../../outside/secret.txt"])
def test_resolve_refuses_dotdot(sandbox: Sandbox, outside: Path, path: str) -> None:
    with pytest.raises(ToolError, match="outside the sandbox"):
        sandbox.resolve(path)


def test_resolve_refuses_dangling_symlink_out(sandbox: Sandbox, out: Path, tmp_path: Path) -> None:
    (out / "new").symlink_to(tmp_path / "not-yet")
    with pytest.raises(ToolError, match="resolves to"):
        sandbox.resolve("new/file.txt")


def test_resolve_error_names_the_roots(sandbox: Sandbox, out: Path, workspace: Path) -> None:
    with pytest.raises(ToolError) as info:
        sandbox.resolve("/etc/passwd")
    assert str(out.resolve()) in str(info.value)
    assert str(workspace.resolve()) in str(info.value)


# --- Read ----------------------------------------------------------------------------------


def test_read_numbers_lines_like_cat_n(sandbox: Sandbox, out: Path) -> None:
    (out / "a.txt").write_text("alpha\nbeta\ngamma\n")
    assert (
        ok(call(sandbox, "Read", file_path="a.txt")) == "     1\talpha\n     2\tbeta\n     3\tgamma"
    )


def test_read_offset_and_limit(sandbox: Sandbox, out: Path) -> None:
    (out / "a.txt").write_text("".join(f"line {n}\n" for n in range(1, 11)))
    text = ok(call(sandbox, "Read", file_path=str(out / "a.txt"), offset=4, limit=2))
    assert text.splitlines() == [
        "     4\tline 4",
        "     5\tline 5",
        "(more lines follow; read on with offset=6)",
    ]


def test_read_workspace_file(sandbox: Sandbox, workspace: Path) -> None:
    (workspace / "w.md").write_text("hello\n")
    assert ok(call(sandbox, "Read", file_path=str(workspace / "w.md"))) == "     1\thello"


def test_read_refuses_directory_binary_and_missing(sandbox: Sandbox, out: Path) -> None:
    (out / "sub").mkdir()
    (out / "blob.bin").write_bytes(b"abc\0def")
    assert "is a directory" in refused(call(sandbox, "Read", file_path="sub"))
    assert "binary" in refused(call(sandbox, "Read", file_path="blob.bin"))
    assert "does not exist" in refused(call(sandbox, "Read", file_path="nope.txt"))


def test_read_refuses_escapes(sandbox: Sandbox, out: Path, outside: Path) -> None:
    (out / "link.txt").symlink_to(outside / "secret.txt")
    for path in ("../outside/secret.txt", str(outside / "secret.txt"), "link.txt"):
        message = refused(call(sandbox, "Read", file_path=path))
        assert "outside the sandbox" in message
        assert SECRET not in message


# --- Write ---------------------------------------------------------------------------------


def test_write_creates_parents_and_reports_bytes(sandbox: Sandbox, out: Path) -> None:
    message = ok(call(sandbox, "Write", file_path="deep/er/note.md", content="héllo"))
    assert (out / "deep" / "er" / "note.md").read_text(encoding="utf-8") == "héllo"
    assert message == f"Wrote 6 bytes to {out.resolve() / 'deep' / 'er' / 'note.md'}"


def test_write_refuses_escapes_and_leaves_outside_unchanged(
    sandbox: Sandbox, out: Path, outside: Path
) -> None:
    (out / "link.txt").symlink_to(outside / "secret.txt")
    (out / "linkdir").symlink_to(outside)
    paths = ["../outside/secret.txt", str(outside / "secret.txt"), "link.txt", "linkdir/new.txt"]
    for path in paths:
        assert "outside the sandbox" in refused(call(sandbox, "Write", file_path=path, content="x"))
    assert (outside / "secret.txt").read_text() == SECRET + "\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_write_into_the_read_only_workspace_is_refused(
    sandbox: Sandbox, out: Path, workspace: Path
) -> None:
    (workspace / "notes.md").write_text("original\n")
    (out / "ws").symlink_to(workspace)
    for path in (str(workspace / "notes.md"), str(workspace / "new" / "x.md"), "ws/new.md"):
        message = refused(call(sandbox, "Write", file_path=path, content="x"))
        assert "read-only workspace" in message
        assert f"deliverables go in the working directory {out.resolve()}" in message
    assert (workspace / "notes.md").read_text() == "original\n"
    assert sorted(p.name for p in workspace.iterdir()) == ["notes.md"]


def test_the_workspace_stays_readable(sandbox: Sandbox, workspace: Path) -> None:
    (workspace / "notes.md").write_text("original\n")
    assert ok(call(sandbox, "Read", file_path=str(workspace / "notes.md"))) == "     1\toriginal"
    assert ok(call(sandbox, "Glob", pattern="*.md", path=str(workspace))).endswith("notes.md")


# --- Edit ----------------------------------------------------------------------------------


def test_edit_replaces_once_keeping_line_endings(sandbox: Sandbox, out: Path) -> None:
    (out / "a.txt").write_bytes(b"one\r\ntwo\r\n")
    message = ok(call(sandbox, "Edit", file_path="a.txt", old_string="two", new_string="2"))
    assert (out / "a.txt").read_bytes() == b"one\r\n2\r\n"
    assert message.endswith("replaced 1 occurrence(s)")


def test_edit_replace_all(sandbox: Sandbox, out: Path) -> None:
    (out / "a.txt").write_text("x y x y x")
    edit = {"file_path": "a.txt", "old_string": "x", "new_string": "z", "replace_all": True}
    assert "replaced 3" in ok(call(sandbox, "Edit", **edit))
    assert (out / "a.txt").read_text() == "z y z y z"


@pytest.mark.parametrize(
    ("old", "new", "replace_all", "expected"),
    [
        ("absent", "b", False, "not found"),
        ("x", "z", False, "occurs 3 times"),
        ("x", "x", True, "are the same"),
    ],
)
def test_edit_errors_leave_file_unchanged(
    sandbox: Sandbox, out: Path, old: str, new: str, replace_all: bool, expected: str
) -> None:
    (out / "a.txt").write_text("x y x y x")
    edit = {"file_path": "a.txt", "old_string": old, "new_string": new, "replace_all": replace_all}
    assert expected in refused(call(sandbox, "Edit", **edit))
    assert (out / "a.txt").read_text() == "x y x y x"


def test_edit_refuses_symlink_out(sandbox: Sandbox, out: Path, outside: Path) -> None:
    (out / "link.txt").symlink_to(outside / "secret.txt")
    edit = {"file_path": "link.txt", "old_string": "secret", "new_string": "public"}
    assert "outside the sandbox" in refused(call(sandbox, "Edit", **edit))
    assert (outside / "secret.txt").read_text() == SECRET + "\n"


def test_edit_in_the_read_only_workspace_is_refused(sandbox: Sandbox, workspace: Path) -> None:
    (workspace / "notes.md").write_text("original\n")
    for path, old in ((str(workspace / "notes.md"), "original"), (str(workspace / "n.md"), "")):
        edit = {"file_path": path, "old_string": old, "new_string": "changed"}
        assert "read-only workspace" in refused(call(sandbox, "Edit", **edit))
    assert (workspace / "notes.md").read_text() == "original\n"
    assert not (workspace / "n.md").exists()


def test_edit_missing_file(sandbox: Sandbox) -> None:
    edit = {"file_path": "none.txt", "old_string": "a", "new_string": "b"}
    assert "does not exist" in refused(call(sandbox, "Edit", **edit))


# --- Glob ----------------------------------------------------------------------------------


def _touch(path: Path, mtime_s: float, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime_s, mtime_s))
    return path


def test_glob_recursive_newest_first(sandbox: Sandbox, out: Path) -> None:
    now = time.time()
    old = _touch(out / "a.py", now - 300)
    new = _touch(out / "pkg" / "deep" / "b.py", now - 10)
    mid = _touch(out / "pkg" / "c.py", now - 100)
    _touch(out / "pkg" / "d.txt", now)
    lines = ok(call(sandbox, "Glob", pattern="**/*.py")).splitlines()
    assert lines == [str(new.resolve()), str(mid.resolve()), str(old.resolve())]


def test_glob_braces_and_path(sandbox: Sandbox, workspace: Path) -> None:
    _touch(workspace / "x.md", 1000)
    _touch(workspace / "y.txt", 2000)
    _touch(workspace / "z.py", 3000)
    text = ok(call(sandbox, "Glob", pattern="*.{md,txt}", path=str(workspace)))
    assert text.splitlines() == [str(workspace / "y.txt"), str(workspace / "x.md")]


def test_glob_no_match(sandbox: Sandbox) -> None:
    assert ok(call(sandbox, "Glob", pattern="*.nothing")) == "No files found"


def test_glob_does_not_leak_outside(sandbox: Sandbox, out: Path, outside: Path) -> None:
    (out / "mine.txt").write_text("mine")
    (out / "linkdir").symlink_to(outside)
    (out / "link.txt").symlink_to(outside / "secret.txt")
    for pattern in ("**/*", "*", "linkdir/*", "**/secret.txt"):
        text = ok(call(sandbox, "Glob", pattern=pattern))
        assert str(outside) not in text
        assert "link.txt" not in text and "secret" not in text
    assert ok(call(sandbox, "Glob", pattern="**/*")) == str(out.resolve() / "mine.txt")


def test_glob_refuses_escaping_pattern_and_path(sandbox: Sandbox, outside: Path) -> None:
    assert "relative" in refused(call(sandbox, "Glob", pattern=str(outside / "*")))
    assert "'..'" in refused(call(sandbox, "Glob", pattern="../outside/*"))
    refused(call(sandbox, "Glob", pattern="*", path=str(outside)))
    refused(call(sandbox, "Glob", pattern="*", path=".."))


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/*.md", "a.md", True),  # ** spans no folder too
        ("**/*.md", "x/y/z/a.md", True),
        ("**/*.md", "x/y/z/a.mdx", False),
        ("docs/**/*.md", "docs/a.md", True),
        ("*.md", "x/a.md", False),  # * stays within one segment
        ("*.{md,txt}", "a.txt", True),
        ("src/**/*.{py,txt}", "src/p/q.py", True),
        ("{a,b{c,d}}.md", "bd.md", True),
        ("[!a]?.{c,h}", "bx.h", True),
        ("[!a]?.{c,h}", "ax.h", False),
        ("file[0-9].txt", "file7.txt", True),
        ("file[0-9].txt", "fileA.txt", False),
        ("*", ".env", True),  # dotfiles are matched (Claude Code's Glob finds hidden files)
        ("**/*.md", ".hidden/a.md", True),
        ("+(a|b).md", "a.md", False),  # no extended globs
        ("!a.md", "b.md", False),  # a leading ! is not a negation
    ],
)
def test_glob_matching(pattern: str, path: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).match(path)) is matches


def test_glob_finds_md_at_depth_0_and_3(sandbox: Sandbox, out: Path) -> None:
    top = _touch(out / "top.md", 1000)
    deep = _touch(out / "a" / "b" / "c" / "deep.md", 2000)
    _touch(out / "a" / "b" / "c" / "deep.txt", 3000)
    hidden = _touch(out / ".notes" / "h.md", 500)
    lines = ok(call(sandbox, "Glob", pattern="**/*.md")).splitlines()
    assert lines == [str(deep.resolve()), str(top.resolve()), str(hidden.resolve())]


def test_glob_brace_explosion_is_refused(sandbox: Sandbox) -> None:
    pattern = "{a,b}" * 9  # 512 alternatives
    assert "more than 256 alternatives" in refused(call(sandbox, "Glob", pattern=pattern))
    assert "more than 256" in refused(call(sandbox, "Grep", pattern="x", glob=pattern))


def test_grep_glob_filter_uses_the_same_matcher(sandbox: Sandbox, corpus: Path) -> None:
    text = ok(call(sandbox, "Grep", pattern="hello", glob="*.{py,txt}"))
    assert text.splitlines()[0] == "Found 2 files"
    assert ok(call(sandbox, "Grep", pattern="hello", glob="sub/*.txt")).endswith("b.txt")
    assert ok(call(sandbox, "Grep", pattern="hello", glob="[!a]*.py")) == "No files found"


def test_compile_glob_semantics() -> None:
    assert compile_glob("**/*.py").match("a.py")
    assert compile_glob("**/*.py").match("x/y/a.py")
    assert not compile_glob("*.py").match("x/a.py")
    assert compile_glob("src/**").match("src/a/b.c")
    assert compile_glob("[!a]?.{c,h}").match("bx.h")
    assert not compile_glob("[!a]?.{c,h}").match("ax.h")
    assert compile_glob("{a,b{c,d}}.md").match("bd.md")


# --- Grep ----------------------------------------------------------------------------------


@pytest.fixture
def corpus(out: Path) -> Path:
    _touch(out / "a.py", 1000, "import os\nprint('Hello')\nhello = 1\n")
    _touch(out / "sub" / "b.txt", 2000, "nothing here\nsay hello\n")
    _touch(out / "c.md", 3000, "no match\n")
    (out / "blob.bin").write_bytes(b"hello\0binary")
    return out


def test_grep_files_with_matches_default(sandbox: Sandbox, corpus: Path) -> None:
    text = ok(call(sandbox, "Grep", pattern="hello"))
    assert text.splitlines() == [
        "Found 2 files",
        str(corpus / "sub" / "b.txt"),
        str(corpus / "a.py"),
    ]


def test_grep_content_with_line_numbers_and_ignore_case(sandbox: Sandbox, corpus: Path) -> None:
    text = ok(call(sandbox, "Grep", pattern="hello", output_mode="content", **{"-i": True}))
    assert text.splitlines() == [
        f"{corpus / 'a.py'}:2:print('Hello')",
        f"{corpus / 'a.py'}:3:hello = 1",
        f"{corpus / 'sub' / 'b.txt'}:2:say hello",
    ]


def test_grep_content_without_line_numbers(sandbox: Sandbox, corpus: Path) -> None:
    text = ok(call(sandbox, "Grep", pattern="^say", output_mode="content", **{"-n": False}))
    assert text == f"{corpus / 'sub' / 'b.txt'}:say hello"


def test_grep_count_and_glob(sandbox: Sandbox, corpus: Path) -> None:
    text = ok(call(sandbox, "Grep", pattern="(?i)hello", output_mode="count", glob="*.py"))
    assert text.splitlines() == [
        f"{corpus / 'a.py'}:2",
        "",
        "Found 2 total occurrences across 1 files.",
    ]


def test_grep_single_file_and_no_match(sandbox: Sandbox, corpus: Path) -> None:
    assert ok(call(sandbox, "Grep", pattern="import", path="a.py")).endswith(str(corpus / "a.py"))
    assert ok(call(sandbox, "Grep", pattern="zzz")) == "No files found"
    assert ok(call(sandbox, "Grep", pattern="zzz", output_mode="content")) == "No matches found"


def test_grep_never_reads_outside(sandbox: Sandbox, out: Path, outside: Path) -> None:
    (out / "link.txt").symlink_to(outside / "secret.txt")
    (out / "linkdir").symlink_to(outside)
    text = ok(call(sandbox, "Grep", pattern="secret", output_mode="content"))
    assert text == "No matches found"
    for path in ("link.txt", str(outside), "../outside"):
        message = refused(call(sandbox, "Grep", pattern="secret", path=path, output_mode="content"))
        assert SECRET not in message


def test_grep_bad_regex_and_bad_mode(sandbox: Sandbox) -> None:
    assert "invalid regular expression" in refused(call(sandbox, "Grep", pattern="(unclosed"))
    message = refused(call(sandbox, "Grep", pattern="x", output_mode="lines"))
    assert "parameter 'output_mode': input should be 'content', 'files_with_matches'" in message


# --- Bash ----------------------------------------------------------------------------------


def test_bash_runs_in_cwd(sandbox: Sandbox, out: Path) -> None:
    assert ok(call(sandbox, "Bash", command="pwd")).strip() == str(out.resolve())
    ok(call(sandbox, "Bash", command="echo made > made.txt", description="write a file"))
    assert (out / "made.txt").read_text() == "made\n"


def test_bash_reports_exit_code_and_stderr(sandbox: Sandbox) -> None:
    text = ok(call(sandbox, "Bash", command="echo oops >&2; exit 3"))
    assert text == "oops\nExit code: 3"
    assert ok(call(sandbox, "Bash", command="true")) == "(no output)"


def test_bash_times_out(sandbox: Sandbox) -> None:
    started = time.monotonic()
    message = refused(call(sandbox, "Bash", command="sleep 30", timeout=300))
    assert "timed out after 300 ms" in message
    assert time.monotonic() - started < 10


def test_bash_truncates_long_output(sandbox: Sandbox) -> None:
    text = ok(call(sandbox, "Bash", command="head -c 100000 /dev/zero | tr '\\0' a; echo END"))
    assert len(text) < 31_000
    assert "output truncated" in text
    assert text.startswith("aaaa") and text.endswith("END\n")


# --- run_tool and select_tools -------------------------------------------------------------


def test_run_tool_unknown_tool(sandbox: Sandbox) -> None:
    result = call(sandbox, "WebFetch", url="https://example.com")
    assert result.tool_use_id == "toolu_1"
    assert "'WebFetch' is not available" in refused(result)
    assert "Read" in result.content


def test_run_tool_tool_not_enabled(sandbox: Sandbox) -> None:
    block = ToolUseBlock(id="t", name="Bash", input={"command": "echo hi"})
    result = run_tool(block, select_tools(None, allow_bash=False), sandbox)
    assert "'Bash' is not available" in refused(result)


@pytest.mark.parametrize(
    ("name", "input", "expected"),
    [
        ("Read", {}, "missing parameter 'file_path'"),
        ("Write", {"file_path": "a.txt"}, "missing parameter 'content'"),
        ("Read", {"file_path": 3}, "parameter 'file_path': input should be a valid string"),
        ("Read", {"file_path": "a", "limit": True}, "'limit': input should be a valid integer"),
        (
            "Edit",
            {"file_path": "a", "old_string": "", "new_string": "", "replace_all": "y"},
            "'replace_all': input should be a valid boolean, got 'y'",
        ),
        ("Read", {"file_path": "a", "color": "red"}, "unknown parameter 'color'"),
        ("Read", {"file_path": "a", "offset": 1.5}, "'offset': input should be a valid integer"),
        ("Read", {"file_path": "a", "offset": 0}, "'offset': input should be greater than"),
        ("Grep", {"pattern": "x", "ignore_case": True}, "unknown parameter 'ignore_case'"),
        ("Grep", {"pattern": "x", "-i": "yes"}, "parameter '-i': input should be a valid"),
        ("Bash", {"command": "true", "timeout": "5"}, "'timeout': input should be a valid"),
    ],
)
def test_run_tool_bad_input(
    sandbox: Sandbox, name: str, input: dict[str, Any], expected: str
) -> None:
    message = refused(call(sandbox, name, **input))
    assert message.startswith(f"{name}: ") and expected in message
    assert "; parameters: " in message and "(required)" in message


def test_bad_input_error_lists_the_expected_parameters(sandbox: Sandbox) -> None:
    message = refused(call(sandbox, "Grep", pattern=1))
    assert message.endswith("parameters: pattern (required), path, glob, output_mode, -i, -n"), (
        message
    )


def test_several_bad_parameters_are_counted_in_one_line(sandbox: Sandbox) -> None:
    message = refused(call(sandbox, "Edit", file_path=1, color="red"))
    assert "(and 3 more)" in message  # file_path, color, old_string, new_string


def test_select_tools() -> None:
    assert [t.name for t in select_tools(None, allow_bash=False)] == [
        "Read",
        "Write",
        "Edit",
        "Glob",
        "Grep",
    ]
    assert [t.name for t in select_tools(None, allow_bash=True)][-1] == "Bash"
    assert [t.name for t in select_tools(["Grep", " Read", "Grep"], allow_bash=True)] == [
        "Grep",
        "Read",
    ]
    assert [t.name for t in select_tools(["Bash", "Read"], allow_bash=False)] == ["Read"]


def test_select_tools_skips_tools_crewbox_lacks_and_keeps_a_tool_with_a_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chosen = select_tools(["Read", "WebSearch", "Bash(git:*)"], allow_bash=True)
    assert [t.name for t in chosen] == ["Read", "Bash"]
    assert "WebSearch" in caplog.text
    assert isinstance(chosen[1], BashTool) and chosen[1].rules == ["git:*"]
    assert "Only these commands are allowed: git:*" in chosen[1].definition.description
    assert ALL_TOOLS["Bash"].definition.description != chosen[1].definition.description


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        ("npm test", True),
        ("npm test -- --watch=false", True),
        ("npm testing", False),
        ("npm install left-pad", False),
        ("npm test && rm -rf .", False),
        ("npm test; npm test", True),
        ("echo $(npm test)", False),
        ("npm test | tee out.txt", False),
        ("ls", True),
    ],
)
def test_bash_rules_allow_only_matching_commands(command: str, allowed: bool) -> None:
    assert command_allowed(command, ["npm test:*", "ls"]) is allowed


def test_a_bash_command_a_rule_does_not_allow_is_a_tool_error(tmp_path: Path) -> None:
    sandbox = Sandbox(cwd=tmp_path)
    tools = select_tools(["Bash(echo hi:*)"], allow_bash=True)
    ok = run_tool(
        ToolUseBlock(id="1", name="Bash", input={"command": "echo hi there"}), tools, sandbox
    )
    refused = run_tool(
        ToolUseBlock(id="2", name="Bash", input={"command": "touch x"}), tools, sandbox
    )
    assert not ok.is_error and "hi there" in ok.content
    assert refused.is_error and "not allowed by this persona's rules (echo hi:*)" in refused.content
    assert not (tmp_path / "x").exists()


def test_definitions_match_names() -> None:
    for name, tool in ALL_TOOLS.items():
        assert tool.definition.name == name == tool.name
        assert tool.definition.input_schema["type"] == "object"


CLAUDE_CODE_PARAMETERS = {
    "Read": (["file_path"], ["file_path", "offset", "limit"]),
    "Write": (["file_path", "content"], ["file_path", "content"]),
    "Edit": (
        ["file_path", "old_string", "new_string"],
        ["file_path", "old_string", "new_string", "replace_all"],
    ),
    "Glob": (["pattern"], ["pattern", "path"]),
    "Grep": (["pattern"], ["pattern", "path", "glob", "output_mode", "-i", "-n"]),
    "Bash": (["command"], ["command", "timeout", "description"]),
}


@pytest.mark.parametrize("name", list(CLAUDE_CODE_PARAMETERS))
def test_schema_is_the_input_models_with_claude_codes_names(name: str) -> None:
    tool = ALL_TOOLS[name]
    schema = tool.definition.input_schema
    assert schema == input_schema(tool.input_model)
    required, properties = CLAUDE_CODE_PARAMETERS[name]
    assert schema["required"] == required and list(schema["properties"]) == properties
    assert schema["additionalProperties"] is False
    assert "title" not in json.dumps(schema) and "anyOf" not in json.dumps(schema)
    for prop in schema["properties"].values():
        assert prop["description"] and prop["type"] in {"string", "integer", "boolean"}


def test_schema_types_follow_the_model() -> None:
    grep = ALL_TOOLS["Grep"].definition.input_schema["properties"]
    assert grep["output_mode"]["enum"] == ["content", "files_with_matches", "count"]
    assert grep["-n"] == {
        "default": True,
        "description": grep["-n"]["description"],
        "type": "boolean",
    }
    read = ALL_TOOLS["Read"].definition.input_schema["properties"]
    assert read["offset"]["type"] == "integer" and read["offset"]["minimum"] == 1
