from setuptools import setup

# The only reason this file exists: cffi's setuptools hook builds the labeler_c extension.
setup(cffi_modules=["labeler_c/_build.py:ffibuilder"])
