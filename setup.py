"""Only the optional C extension lives here; everything else is in pyproject.toml.

envcrypt._gcmbatch drives OpenSSL's EVP AES-GCM / AES-SIV over many segments with the GIL
released: the C2SP chunks of object bodies (envcrypt.chunked) and the cells of encrypted
columns (envcrypt.columns).  It is optional: without a C compiler or the OpenSSL headers the
build of it fails quietly and both use their pure path (byte-identical output).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "envcrypt._gcmbatch",
            sources=["envcrypt/_gcmbatch.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
