# tag_labels.cmake: a ctest label for each Catch2 tag of a test executable's cases, so that
# `ctest -L udp` selects what `engine_tests "[udp]"` runs (Catch2 v2's catch_discover_tests sets no
# labels). Run after the executable is built; fails the build if a case has no tag of TAGS, or a
# tag that is not one of them.
#   cmake -D EXE=path/engine_tests -D "PREFIX=engine_tests: " -D TAGS=tcp,udp -D OUT=labels.cmake -P tag_labels.cmake
# PREFIX is catch_discover_tests' TEST_PREFIX, passed the same way (which drops its trailing space).
cmake_minimum_required(VERSION 3.25)

# The names of the cases that `spec` selects, hidden ones left out (ctest has none of them).
function(case_names spec out)
  execute_process(COMMAND "${EXE}" "${spec}~[.]" --list-test-names-only
                  OUTPUT_VARIABLE text RESULT_VARIABLE status)  # the status is the count
  string(REGEX REPLACE "\n$" "" text "${text}")
  string(REPLACE "\n" ";" names "${text}")
  set(${out} "${names}" PARENT_SCOPE)
endfunction()

string(REPLACE "," ";" tags "${TAGS}")
get_filename_component(exe_name "${EXE}" NAME)

execute_process(COMMAND "${EXE}" --list-tags OUTPUT_VARIABLE text)
string(REGEX MATCHALL "\\[[^]\n]*\\]" found "${text}")
foreach(tag IN LISTS found)
  string(REGEX REPLACE "^\\[(.*)\\]$" "\\1" tag "${tag}")
  if(NOT tag IN_LIST tags AND NOT tag MATCHES "^[.!#]")
    message(FATAL_ERROR "${exe_name}: tag [${tag}] is not one of PORTRELAY_TEST_TAGS (tests/CMakeLists.txt)")
  endif()
endforeach()

set(tagged "")
foreach(tag IN LISTS tags)
  case_names("[${tag}]" cases)
  foreach(case IN LISTS cases)
    list(APPEND tagged "${case}")
    string(MD5 key "${case}")
    list(APPEND "labels_${key}" "${tag}")
  endforeach()
endforeach()

set(script "")
case_names("" all)
foreach(case IN LISTS all)
  if(NOT case IN_LIST tagged)
    message(FATAL_ERROR "${exe_name}: \"${case}\" has no tag of PORTRELAY_TEST_TAGS (tests/CMakeLists.txt)")
  endif()
  string(MD5 key "${case}")
  string(APPEND script "set_tests_properties([==[${PREFIX}${case}]==] PROPERTIES LABELS \"${labels_${key}}\")\n")
endforeach()
file(WRITE "${OUT}" "${script}")
