"""CO and O on Pt(111): adsorption energies on the top, bridge, fcc and hcp sites.

    python examples/adsorption_pt111.py                 # the shipped tdn-catalysis
    python examples/adsorption_pt111.py --model MODEL   # a checkpoint, registered name or emt

The same from the command line: ``tdn adsorb fcc111:Pt:3x3x4 CO -m MODEL``. Energies are
referenced to CO(g) and 1/2 O2(g) relaxed with the same model (see docs/cli.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tdn_calc import adsorption
from tdn_calc.slab import fix_bottom_layers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tdn-catalysis",
                        help="checkpoint, model name, auto or emt")
    parser.add_argument("--outdir", default="adsorption_pt111")
    args = parser.parse_args()
    for name in ("CO", "O"):
        slab = adsorption.build_slab("fcc111:Pt:3x3x4", vacuum=10.0)
        fix_bottom_layers(slab, 2)
        ads = adsorption.build_adsorbate(name)
        gases = [adsorption.molecule(g) for g in adsorption.reference_terms(ads)]
        relax_many, info = adsorption.make_relaxer(args.model, [slab, ads, *gases])
        result = adsorption.adsorption_energies(slab, ads, relax_many, slab_label="Pt(111)")
        out = Path(args.outdir)
        out.mkdir(parents=True, exist_ok=True)
        adsorption.plot(result, out / f"{name}_pt111.png")
        print(f"{name} on Pt(111) with {info['name']}:")
        for s in result.sites:
            moved = "" if s.final_site == s.site else f" (moved to {s.final_site})"
            print(f"  {s.site:7s} E_ads = {s.adsorption_energy:7.3f} eV{moved}")
        print(f"  most stable: {result.most_stable.site}; plot: {out / f'{name}_pt111.png'}")


if __name__ == "__main__":
    main()
