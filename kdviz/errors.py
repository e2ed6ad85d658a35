"""The one exception type for errors a user can cause."""


class KdvizError(Exception):
    """An error the user can fix; its message is one sentence that says what to do.

    The CLI prints it without a traceback and exits non-zero; the UI shows it on the page.
    """
