"""The codebase's own rules: short functions, generated settings docs in sync."""

import ast
from pathlib import Path

from lawforge.search.settings import settings_markdown

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80


def test_no_function_in_lawforge_is_longer_than_80_lines():
    long = []
    for path in sorted((ROOT / "lawforge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_settings_doc_is_generated_from_the_settings_classes():
    doc = ROOT / "docs" / "settings.md"
    assert doc.read_text() == settings_markdown(), "regenerate: lawforge settings --markdown > docs/settings.md"


def test_readme_stays_a_short_user_guide_with_both_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    assert "pip install -e . && lawforge discover synthetic_multigroup" in text
    assert 'pip install -e ".[dev,ray]" && LAWFORGE_DATA=../shared python -m pytest -q' in text


def test_readme_layout_table_names_every_module():
    """Each module under lawforge/ is named in the README's layout table (a package below a layer,
    such as ``search/contract/``, by one entry for its submodules)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Layout and development"):]
    table = "\n".join(line for line in table.splitlines() if line.startswith("| `"))
    missing = []
    for path in sorted((ROOT / "lawforge").rglob("*.py")):
        parts = path.relative_to(ROOT / "lawforge").with_suffix("").parts
        if parts[-1].startswith("_"):
            continue
        name = f"`{parts[1]}/`" if len(parts) > 2 else f"`{parts[-1]}`"
        if name not in table:
            missing.append("/".join(parts))
    assert not missing, f"modules the README's layout table does not name: {missing}"
