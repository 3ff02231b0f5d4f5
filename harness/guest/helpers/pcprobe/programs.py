"""Programs run from a mount, as a container runs its image's programs."""



def execute(path, timeout=60.0):
    """Run the program ``path`` (no arguments, nothing on stdin): its exit status and what
    it printed."""
    import subprocess
    done = subprocess.run([path], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, check=False)
    return {"status": done.returncode, "stdout": done.stdout.decode(errors="replace"),
            "stderr": done.stderr.decode(errors="replace")}
