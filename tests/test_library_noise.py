"""Library warnings a user cannot act on are silenced (the plugin does it when imported); others are not."""
import warnings

from wavllm_fairseq.library_noise import silence_library_noise


def test_known_library_warnings_are_silenced_and_others_kept():
    # pytest installs its own filters around each test, so the plugin's are installed again here
    with warnings.catch_warnings(record=True) as seen:
        silence_library_noise()
        warnings.warn("\nThe version_base parameter is not specified.\nPlease specify a compatability version level",
                      UserWarning)
        warnings.warn("\n'demo_stage1' is validated against ConfigStore schema with the same name.", UserWarning)
        warnings.warn("'pin_memory' argument is set as true but no accelerator is found, then device pinned memory "
                      "won't be used.", UserWarning)
        warnings.warn("something our code should hear about", UserWarning)
    assert [str(w.message) for w in seen] == ["something our code should hear about"]
