"""Just a Process: the helper package of the course.

A container is just a process that a runtime set up with namespaces, control
groups and capabilities.  One module per kernel facility; the notebooks show
the idea, these modules do the plumbing.  Load the IPython extension with
``%load_ext justaprocess``.
"""
__version__ = "0.1.0"


def load_ipython_extension(ipython):
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):
    from .magics import unload_ipython_extension as unload

    unload(ipython)
