"""Starting processes the way launchers do, for the tests of several processes / machines."""
import os
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(script, argvs, cwd, timeout=180):
    """One process per argv, as torchrun on several machines would start them (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_*), each with its own command line: a machine's own
    --work_dir / --output_dir. Returns rank 0's stdout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(len(argvs)))
    procs = []
    for rank, argv in enumerate(argvs):
        # each "machine" runs one process: local rank 0 of a local world of 1
        e = dict(env, RANK=str(rank), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        procs.append(subprocess.Popen([sys.executable, str(script)] + [str(a) for a in argv],
                                      cwd=cwd, env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {rank}: " + out[-3000:]
    return outs[0]
