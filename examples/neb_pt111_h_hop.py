"""H hop fcc -> hcp on Pt(111) with `tdn neb` (or run_neb) and a climbing image.

Usage: python examples/neb_pt111_h_hop.py [MODEL] [OUTDIR]

MODEL defaults to the shipped ``tdn-catalysis`` (``emt`` runs ASE's EMT instead; any TDN
checkpoint or registered name works). Writes OUTDIR/{initial,final}.extxyz and
runs ``tdn neb`` on them: OUTDIR/neb_h_hop.{extxyz,json,png}.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ase.build import add_adsorbate, fcc111
from ase.constraints import FixAtoms
from ase.io import write


def endpoint(site: str):
    slab = fcc111("Pt", size=(3, 3, 3), vacuum=8.0, a=3.92)
    slab.pbc = (True, True, False)
    add_adsorbate(slab, "H", 1.0, site)
    slab.info.pop("adsorbate_info", None)  # a dict: extxyz cannot store it
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
    return slab


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "tdn-catalysis"
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "neb_h_hop")
    out.mkdir(exist_ok=True)
    write(out / "initial.extxyz", endpoint("fcc"))
    write(out / "final.extxyz", endpoint("hcp"))
    cmd = ["tdn", "neb", str(out / "initial.extxyz"), str(out / "final.extxyz"), "-n", "7",
           "--climb", "-m", model, "--fmax", "0.03",
           "-o", str(out / "neb_h_hop.extxyz")]  # fmt: skip
    print(" ".join(cmd))
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
