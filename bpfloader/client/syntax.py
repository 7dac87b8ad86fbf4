"""The syntax of map dump types, as the command line's help shows it: text only, so that
building the parser imports nothing of the client. (The attach targets' syntax is
targets.TARGET_SYNTAX, made from the table that parses them.)"""

TYPE_HELP = (
    "u8..u64, i8..i64, hex (raw bytes), or a struct format such as '=IH'; by default the"
    " map's own BTF type (raw bytes for a map without BTF)"
)
