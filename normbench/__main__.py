from normbench.cli import command

command()
