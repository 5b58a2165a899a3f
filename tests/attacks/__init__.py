"""Attack tests: each builds hostile input the way someone who can write the storage would."""
