"""`aiidetect --install-completion` / `--show-completion`: typer's own, with the shell checked first.

Typer finds the shell by looking at the processes above this one. Under a shell it has no script for
(`sh`, `dash`, `ksh`, `csh`, or none found: cron, a container's entrypoint) it printed "Shell sh not
supported." and exited 1, the code the contract keeps for findings (docs/schema.md). The check here makes
that a usage error instead: exit 2 and one message naming the shells completion is for.
"""
from __future__ import annotations

# The shells typer has a completion script for (typer.completion; pwsh is PowerShell's newer name).
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")
_OPTIONS = ("install_completion", "show_completion")


def detected_shell() -> str | None:
    """The shell this process runs under, as typer finds it (None when it finds none)."""
    try:
        from typer.completion import _get_shell_name

        return _get_shell_name()
    except Exception:  # noqa: BLE001 - a typer without that helper, or no process tree to read
        return None


def _shell_first(callback):
    def checked(ctx, param, value):
        # a str is a shell named on the command line (a typer without detection takes one, from its own list)
        if value and not isinstance(value, str) and not ctx.resilient_parsing:
            shell = detected_shell()
            if shell not in SHELLS:
                import typer

                found = f"this shell is {shell}" if shell else "no shell was found above this process"
                raise typer.BadParameter(
                    f"completion is for bash, zsh, fish or PowerShell, and {found}; run it from one of them "
                    f"(e.g. bash -c 'aiidetect {param.opts[0]}')", ctx=ctx, param=param)
        return callback(ctx, param, value)

    checked.shell_checked = True
    return checked


def shell_checked(group_class):
    """The root group's class, checking the shell before typer's completion options run. Typer adds
    those options after the group is built, anew for each run: they are wrapped when the arguments
    are parsed, before any callback fires."""

    class ShellCheckedGroup(group_class):
        def parse_args(self, ctx, args):
            for p in self.params:
                if p.name in _OPTIONS and p.callback is not None and not getattr(p.callback, "shell_checked", False):
                    p.callback = _shell_first(p.callback)
            return super().parse_args(ctx, args)

    ShellCheckedGroup.__name__ = ShellCheckedGroup.__qualname__ = group_class.__name__
    return ShellCheckedGroup
