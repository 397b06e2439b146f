/* trainrun — ember's launcher: `trainrun --nproc 8 train.py`.
 * See launcher/launcher_impl.h for the pieces and --help for the options.
 *
 * Exit status: the failed worker's exit code (128+N when it died by signal
 * N), 0 when every worker succeeded, 1 when the job could not run
 * (rendezvous, a lost node), 2 for a bad command line.
 */
#include <stdio.h>
#include <string.h>

#include "launcher/launcher_impl.h"

int main(int argc, char **argv) {
  tr_options o;
  tr_command cmd = {0};
  int code = 2;
  if (tr_options_parse(&o, argc, argv) != EM_OK) {
    fprintf(stderr, "trainrun: error: %s\nRun 'trainrun --help' for usage.\n", em_last_error());
    goto done;
  }
  if (o.help) {
    tr_print_help(stdout);
    code = 0;
    goto done;
  }
  if (o.version) {
    tr_print_version(stdout);
    code = 0;
    goto done;
  }
  if (tr_options_resolve(&o) != EM_OK || tr_command_build(&o, &cmd) != EM_OK) {
    fprintf(stderr, "trainrun: error: %s\nRun 'trainrun --help' for usage.\n", em_last_error());
    goto done;
  }
  code = tr_agent_run(&o, &cmd);
done:
  tr_command_free(&cmd);
  tr_options_free(&o);
  return code;
}
