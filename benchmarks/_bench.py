"""What every benchmark shares: the peak resident memory of the process measuring one side."""

import resource

__all__ = ["peak_rss_mb"]


def peak_rss_mb() -> float:
    """This process's peak RSS in MB, from ``VmHWM`` (reset by exec, whereas ``ru_maxrss`` of an exec'ed
    child also carries its forking parent's peak); ``ru_maxrss`` where /proc is not available."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
