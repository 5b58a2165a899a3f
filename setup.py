"""Only the optional C extension lives here; everything else is in pyproject.toml.

envcrypt._cellgcm drives OpenSSL's EVP AES-GCM / AES-SIV over many table cells with the GIL
released (envcrypt.columns).  It is optional: without a C compiler or the OpenSSL headers the
build of it fails quietly and envcrypt.columns uses its pure path (byte-identical output).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "envcrypt._cellgcm",
            sources=["envcrypt/_cellgcm.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
