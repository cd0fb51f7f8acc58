# bash completion for understudy and understudyd.  The words come from the
# programs' own --help (CLI11's layout: "Subcommands:" lists commands,
# "Options:" lists flags), so a new command or flag completes without an
# edit here.

_understudy_help_words() {
  # $1: the program, $2...: subcommand words; prints subcommands and flags.
  "$@" --help 2>/dev/null | awk '
    /^Subcommands:/ { sub_ = 1; next }
    /^[A-Za-z]/ { sub_ = 0 }
    sub_ && /^  [a-z]/ { print $1; next }
    /^ +-/ {
      # An option line: "  -j,--journal TEXT  help"; the names end at the
      # first word that is not one.
      n = split($1, names, ",")
      for (i = 1; i <= n; i++) if (names[i] ~ /^--?[A-Za-z][A-Za-z0-9-]*$/) print names[i]
    }'
}

_understudy() {
  local cur prev words cword
  _init_completion 2>/dev/null || {
    cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}
    words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD
  }
  local prog=${words[0]} i
  local -a path=("$prog")
  # The subcommand words typed so far (those --help lists as subcommands).
  for ((i = 1; i < cword; i++)); do
    [[ ${words[i]} == -- ]] && return 0     # after --: the program's own args
    [[ ${words[i]} == -* ]] && continue
    if _understudy_help_words "${path[@]}" | grep -qx -- "${words[i]}"; then
      path+=("${words[i]}")
    fi
  done
  case $prev in
    --key|--journal|--data|--output|-o|--binary|--config|--admin|--admin-socket)
      COMPREPLY=($(compgen -f -- "$cur")); return 0 ;;
  esac
  COMPREPLY=($(compgen -W "$(_understudy_help_words "${path[@]}")" -- "$cur"))
}
complete -F _understudy understudy understudyd
