"""The syntax of attach targets and of map dump types, as the command line's help shows them:
text only, so that building the parser imports nothing of the client."""

TARGET_SYNTAX = """\
  tracepoint:CATEGORY:NAME          tracepoint:sched:sched_switch
  kprobe:FUNCTION[+OFFSET]          kretprobe:FUNCTION
  uprobe:BINARY:SYMBOL[+OFFSET]     uprobe:/bin/bash:readline, uprobe:BINARY:0xOFFSET
  uretprobe:BINARY:SYMBOL           (likewise)
  perf_event[:HZ]                   the cpu-clock of every online CPU (default 99 Hz)
  cgroup:DIR[:TYPE]                 a cgroup v2 directory; TYPE ingress|egress for cgroupskb,
                                    found for the others (connect4, sockops, sysctl, ...)
  xdp:INTERFACE[:generic|driver]    (generic by default)
  tc:INTERFACE:ingress|egress[:PRIORITY]"""
TYPE_HELP = "u8..u64, i8..i64, hex (raw bytes, the default), or a struct format such as '=IH'"
