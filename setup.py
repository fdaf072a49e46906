from setuptools import Extension, setup

setup(
    # Optional: without a C compiler, cubemux decodes every row in Python.
    ext_modules=[Extension("cubemux._rowcopy", ["cubemux/_rowcopy.c"], optional=True)],
)
