"""The differential suite: the same fault scripts through the bare SDK and through ours."""
