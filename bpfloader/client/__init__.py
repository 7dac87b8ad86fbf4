"""What other processes import to use the pins: typed maps and pinned programs.

from bpfloader.client import BpfMap, Program
with BpfMap.open("/sys/fs/bpf/map_myschedtp_cpu_pid_map", key="i", value="I", readonly=True) as m:
    print(m[0])
with Program.open("/sys/fs/bpf/prog_myschedtp_tracepoint_sched_sched_switch") as prog:
    attachment = prog.attach_tracepoint("sched", "sched_switch")
"""

from bpfloader.client.maps import BpfMap
from bpfloader.client.programs import Program, TracepointAttachment
from bpfloader.client.ready import wait_for_loaded

__all__ = ["BpfMap", "Program", "TracepointAttachment", "wait_for_loaded"]
