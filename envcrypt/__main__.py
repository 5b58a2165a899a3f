from .cli._exit import program

program()
