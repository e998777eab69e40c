"`python -m cellsteer_nb ...`: the `cellsteer` command line of notebook `10_cli` (a shim, not exported by nbdev)."
from cellsteer_nb.cli import console
if __name__ == '__main__': console()
