# Generates man pages from the programs' --help (cmake -P; see
# packaging/CMakeLists.txt).  Inputs: OUT, VERSION, UNDERSTUDY, UNDERSTUDYD,
# CHECKPOINT, HELP2MAN (empty or *-NOTFOUND: use the generator below).
#
# help2man needs one executable per page that answers --help and
# --version; a subcommand page gets a two-line wrapper script
# (`understudy-record --help` = `understudy record --help`).
file(MAKE_DIRECTORY ${OUT}/wrappers)
file(GLOB _old ${OUT}/*.1)
if(_old)
  file(REMOVE ${_old})
endif()

function(man_page name exe summary)
  set(page ${OUT}/${name}.1)
  if(HELP2MAN)
    execute_process(
      COMMAND ${HELP2MAN} --no-info --no-discard-stderr --section=1 --name=${summary}
              --version-string=${VERSION} --source=understudy --output=${page} ${exe}
      RESULT_VARIABLE rc ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "help2man ${name}: ${err}")
    endif()
    return()
  endif()
  # The small generator: NAME, SYNOPSIS from the usage line, the help text
  # verbatim (no-fill) as DESCRIPTION.
  execute_process(COMMAND ${exe} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${exe} --help exited ${rc}")
  endif()
  string(REPLACE "\\" "\\\\" help "${help}")
  string(REGEX REPLACE "\n\\." "\n\\\\&." help "${help}")
  string(REGEX REPLACE "\n'" "\n\\\\&'" help "${help}")
  string(TOUPPER ${name} upper)
  file(WRITE ${page}
       ".TH ${upper} 1 \"\" \"understudy ${VERSION}\" \"User Commands\"\n"
       ".SH NAME\n${name} \\- ${summary}\n"
       ".SH DESCRIPTION\n.nf\n${help}.fi\n"
       ".SH SEE ALSO\nunderstudy(1), understudyd(1)\n")
endfunction()

man_page(understudy ${UNDERSTUDY} "transparent record/replay fault tolerance for unmodified Linux servers")
man_page(understudyd ${UNDERSTUDYD} "the understudy node agent (backup, shadow, takeover)")
man_page(understudy-checkpoint ${CHECKPOINT} "checkpoint and restore a process tree with CRIU")

# The subcommands, as `understudy --help` lists them: indented lines after
# "Subcommands:" (CLI11), "  NAME  description".
execute_process(COMMAND ${UNDERSTUDY} --help OUTPUT_VARIABLE top)
string(REGEX REPLACE ".*\nSubcommands:\n" "" subs "${top}")
string(REPLACE "\n" ";" lines "${subs}")
foreach(line ${lines})
  if(NOT line MATCHES "^  ([a-z][a-z0-9-]*) +(.*)$")
    continue()
  endif()
  set(sub ${CMAKE_MATCH_1})
  set(summary ${CMAKE_MATCH_2})
  string(REGEX REPLACE "\\..*" "" summary "${summary}")
  set(wrapper ${OUT}/wrappers/understudy-${sub})
  file(WRITE ${wrapper}
       "#!/bin/sh\n"
       "if [ \"$1\" = --version ]; then echo 'understudy-${sub} ${VERSION}'; exit 0; fi\n"
       "exec '${UNDERSTUDY}' ${sub} \"$@\"\n")
  file(CHMOD ${wrapper} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  man_page(understudy-${sub} ${wrapper} "${summary}")
endforeach()
file(WRITE ${OUT}/stamp "")
