"""The app stack on the operator's side: compose rendering, the static binding gate, images
(build, save, ship, load) and releases. roles/stack.py drives it over pyinfra.

Example:
    from stack.compose import ComposeContext, render_compose
    from stack.gate import check_compose
"""
