"""Fixtures shared by several test modules, and the `slow` marker put on tests by name (SLOW below), so
`make test-fast` (-m 'not slow and not slurm and not gpu') runs the unit layer in under two minutes.
Plain helpers are in helpers.py, the dataset writers in data_files.py, fake result tables in fake_runs.py."""
import numpy as np
import pandas as pd
import pytest
import torch

from fake_runs import mlp_weights, row, write_sweep
from widen_cli import results

# Tests that take seconds each (training, subprocesses, big plans): `make test` runs them, `make test-fast`
# does not. As "file::test function" (every parametrisation of it), found with `--durations` on 2 cores.
SLOW = {
    "test_axes.py::test_every_member_runs_at_every_lr_and_one_is_selected",
    "test_axes.py::test_rerun_of_a_tuned_sweep_trains_nothing",
    "test_axes.py::test_the_report_draws_only_the_selected_runs",
    "test_axes.py::test_select_on_val_holds_out_part_of_the_training_split",
    "test_axes.py::test_dense_runs_shared_between_methods_run_once",
    "test_cli.py::test_missing_data_root_names_path_and_download",
    "test_cli.py::test_console_script_smoke_preset",
    "test_cli.py::test_train_digits_end_to_end",
    "test_cli.py::test_resnet18_trains_on_synthetic_with_override",
    "test_cli.py::test_run_folder_name_is_stable_and_distinct",
    "test_cli_ux.py::test_dry_run_is_a_plain_flag",
    "test_cli_ux.py::test_width_cap_names_staggered",
    "test_cli_ux.py::test_completion_of_values",
    "test_cli_ux.py::test_completion_knows_every_launcher",
    "test_config.py::test_training_without_compile_does_not_load_the_compiler",
    "test_config.py::test_config_dir_adds_presets_and_datasets",
    "test_cost.py::test_image_folders_count_their_training_images",
    "test_cost.py::test_macs_are_half_of_what_torch_counts_by_hand",
    "test_cost.py::test_estimate_counts_the_images_on_disk",
    "test_damaged.py::test_a_damaged_table_of_a_finished_run_is_one_line",
    "test_damaged.py::test_a_sweep_member_with_a_damaged_summary_fails_and_the_rest_is_gathered",
    "test_damaged.py::test_a_damaged_checkpoint_in_a_batched_family_fails_that_member_only",
    "test_damaged.py::test_a_damaged_parent_model_fails_the_pruned_member_in_one_line",
    "test_damaged.py::test_a_checkpoint_that_does_not_fit_the_run_is_one_line",
    "test_damaged.py::test_an_intact_checkpoint_written_the_same_way_resumes",
    "test_damaged.py::test_a_damaged_start_file_is_written_again_exactly_when_a_run_resumes",
    "test_damaged.py::test_a_finished_run_keeps_nothing_a_kill_left",
    "test_damaged.py::test_a_sweep_removes_temporaries_of_writers_that_are_gone",
    "test_datasets.py::test_image_folder_count_is_what_the_loader_reads",
    "test_datasets.py::test_generated_sizes_are_what_the_loader_reads",
    "test_data.py::test_digits",
    "test_data.py::test_cifar_augmentation_changes_train_batches_not_test",
    "test_data.py::test_imagenet_training_applies_no_flip_unless_asked",
    "test_fingerprint.py::test_another_mnist_trains_and_a_copy_reuses",
    "test_fingerprint.py::test_two_own_image_folders_train_apart_and_are_reported_apart",
    "test_fingerprint.py::test_a_sweep_over_other_data_plans_its_runs_as_not_finished",
    "test_fingerprint.py::test_the_fingerprint_is_computed_once_per_command",
    "test_fingerprint.py::test_a_run_from_before_fingerprints_is_not_pooled_with_one_on_known_data",
    "test_gather.py::test_a_gathered_row_is_its_runs_summary_row",
    "test_images.py::test_an_unreadable_image_stops_the_run_naming_it",
    "test_images.py::test_a_truncated_jpeg_stops_the_run_naming_it",
    "test_images.py::test_skip_bad_images_trains_and_counts_them",
    "test_install.py::test_the_wheel_runs_every_command_from_another_folder",
    "test_install.py::test_shell_completion",
    "test_kernels.py::test_sweep_and_kernel_distance_keep_the_same_counts_per_layer",
    "test_kernels.py::test_command_on_mnist_files",
    "test_lifecycle.py::test_finished_run_with_other_settings_is_refused",
    "test_lifecycle.py::test_unfinished_run_with_other_settings_names_them",
    "test_lifecycle.py::test_run_claimed_by_a_live_process_is_waited_for",
    "test_lifecycle.py::test_a_paused_holder_that_was_taken_over_stops_without_writing",
    "test_lifecycle.py::test_interrupted_family_names_the_epochs_each_member_saved",
    "test_lifecycle.py::test_two_identical_sweeps_train_each_member_once",
    "test_methods.py::test_a_method_registered_from_outside_plans_and_trains",
    "test_plan.py::test_compositions_do_not_grow_with_the_family",
    "test_plan.py::test_every_preset_plans_without_data",
    "test_plan.py::test_members_one_by_one_equal_batched",
    "test_pool.py::test_signal_stops_the_pool_gathers_and_resumes",
    "test_pool.py::test_workers_die_with_a_killed_sweep",
    "test_pool.py::test_pool_splits_the_cpus_this_process_may_use",
    "test_pool.py::test_redirected_train_logs_one_line_per_epoch",
    "test_pool.py::test_long_epochs_get_a_line_while_they_run",
    "test_prune.py::test_structured_resnet18_keeps_residual_shapes_and_computes_the_masked_wide_model",
    "test_prune.py::test_bad_pruning_options_are_user_errors",
    "test_prune.py::test_every_pruned_member_keeps_the_budget_after_fine_tuning",
    "test_prune.py::test_rewind_restores_the_parent_initial_weights_exactly",
    "test_prune.py::test_two_pruned_members_sharing_a_parent_train_it_once",
    "test_prune.py::test_a_sweep_of_sparse_and_three_pruned_variants_trains_each_dense_parent_once",
    "test_prune.py::test_killing_a_pruned_member_during_fine_tuning_resumes",
    "test_prune.py::test_report_draws_pruned_members_beside_sparse_ones",
    "test_prune.py::test_a_structured_resnet_member_trains_end_to_end",
    "test_regrow.py::test_every_layer_holds_its_count_after_every_update",
    "test_refusals.py::test_a_small_run_fits_under_the_limit",
    "test_refusals.py::test_huge_sizes_refused_before_allocation",
    "test_refusals.py::test_disk_full_during_train_is_one_line",
    "test_refusals.py::test_sweep_member_that_fills_the_disk_says_so",
    "test_refusals.py::test_read_only_output_folder_is_one_line",
    "test_reliability.py::test_sigkill_then_resume_equals_an_uninterrupted_run",
    "test_reliability.py::test_interrupt_saves_and_says_how_to_resume",
    "test_reliability.py::test_unreadable_checkpoint_is_refused",
    "test_reliability.py::test_nan_loss_is_recorded_as_diverged_and_not_retried",
    "test_reliability.py::test_sweep_records_diverged_members_and_goes_on",
    "test_reliability.py::test_parallel_sweep_records_a_failed_member_and_the_others",
    "test_reliability.py::test_two_process_ddp_matches_single_process",
    "test_reliability.py::test_killed_batched_family_resumes_batched_as_if_never_interrupted",
    "test_report.py::test_real_sweep_report",
    "test_report.py::test_a_copied_sweep_folder_counts_each_seed_once",
    "test_report.py::test_kernel_overlay_joins_only_matching_families",
    "test_report.py::test_runs_that_differ_in_more_than_the_seed_are_not_averaged",
    "test_report.py::test_repeats_that_disagree_are_named_and_counted_once",
    "test_report_figures.py::test_training_curves_are_the_per_epoch_means_over_seeds",
    "test_report_figures.py::test_a_second_report_into_the_same_folder_removes_the_first_reports_figures",
    "test_report_figures.py::test_table_1_holds_the_standard_error_and_seed_count_of_every_cell",
    "test_speed.py::test_sparse_family_batched_equals_each_alone",
    "test_speed.py::test_sparse_family_batched_on_the_public_paths_equals_each_alone",
    "test_speed.py::test_dense_family_of_seeds_equals_each_alone",
    "test_speed.py::test_bf16_trains_on_cpu_with_other_numbers",
    "test_sweep.py::test_dry_run_cifar100_base18_plan",
    "test_sweep.py::test_dry_run_imagenet_table1_needs_no_data",
    "test_sweep.py::test_dry_run_bottleneck_families_report_deviation",
    "test_sweep.py::test_sweep_runs_every_member_and_seed",
    "test_sweep.py::test_local_launcher_trains_mlp_families_batched",
    "test_sweep.py::test_rerun_trains_nothing",
    "test_sweep.py::test_missing_member_is_run_on_rerun",
    "test_sweep.py::test_launchers_give_the_same_rows",
    "test_sweep.py::test_train_one_sparse_member_directly",
    "test_sweep.py::test_same_name_with_other_settings_is_refused_unless_restart",
    "test_sweep.py::test_two_sweeps_of_one_name_started_together",
    "test_sweep.py::test_submitit_local_honours_jobs",
    "test_tables.py::test_every_kind_reads_as_one_table",
    "test_tables.py::test_metrics_rows_name_their_run",
    "test_tables.py::test_summaries_say_what_produced_them",
    "test_tables.py::test_provenance_is_not_identity_a_rerun_trains_nothing",
    "test_tracking.py::test_tensorboard_holds_each_epoch",
    "test_tracking.py::test_sweep_members_each_get_their_own_tensorboard_run",
    "test_tracking.py::test_mlflow_file_store",
    "test_tracking.py::test_wandb_offline_run",
    "test_tracking.py::test_a_killed_run_resumes_its_tracker_runs",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def one_thread(monkeypatch):
    """One torch thread in this process and in every run it starts (helpers.ENV says why)."""
    monkeypatch.setenv("WIDEN_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory):
    """Two sparse budgets with dense-wide rows and two seeds, an MLP grid, a bottleneck family, a kernel table."""
    root = tmp_path_factory.mktemp("fake")
    rng = np.random.default_rng(0)
    dense = {}  # a dense model of one width and seed is one experiment, whichever sweep ran it: one accuracy

    def acc(method, w, base, s, low, high):
        drawn = rng.uniform(low, high)
        return dense.setdefault((w, s), drawn) if method == "dense" or w == base else drawn

    sweeps = []
    for base in (4, 8):
        rows = [row("sparse", w, base, s, acc("sparse", w, base, s, 0.5, 0.9)) for w in (base, 2 * base, 4 * base)
                for s in (0, 1)]
        rows += [row("dense", w, base, s, acc("dense", w, base, s, 0.5, 0.99)) for w in (2 * base, 4 * base)
                 for s in (0, 1)]
        sweeps.append(write_sweep(root / "runs" / f"digits-b{base}", rows, base_width=base))
    grid = [row("sparse", w, 5, 0, rng.uniform(0.8, 0.98), dataset="mnist", llc=c, n_weights=3970)
            for w in (5, 10, 20) for c in (1.0, 0.5, 0.2) if not (w == 5 and c < 1)]
    for r in grid:
        r["n_weights_dense"] = mlp_weights(r["width"], inputs=784)
        r["connectivity"] = 3970 / r["n_weights_dense"]
    sweeps.append(write_sweep(root / "runs" / "grid", grid, dataset="mnist", members=False))
    bottleneck = [row("linear-bottleneck", w, 8, 0, rng.uniform(0.5, 0.9)) for w in (8, 16)] + [
        row("dense", 8, 8, 0, dense[8, 0])]
    sweeps.append(write_sweep(root / "runs" / "linear", bottleneck, members=False))
    widths = np.array([4, 8, 16, 32])
    kernel = pd.DataFrame(dict(
        width=widths, base_width=4, n_weights=296, input_dim=64, outputs=10, connectivity=4 / widths,
        first_layer_connectivity=4 / widths, first_layer_weights=256, distribution="staggered", inputs="gaussian",
        dataset=None, budget=296, last_layer_weights=40, width_eq29=2 * (4 * 64) ** 0.5, min_eq29=widths == 32,
        reference="analytic", pairs=100, inits=10, mask_samples=8, seed=0,
        distance_empirical=1 / widths + 0.01, distance_empirical_se=0.002, distance_theorem1=1 / widths + 0.012,
        distance_theorem1_bias=1 / widths + 0.013, distance_eq6=1 / widths + 0.015, distance_leading_order=1 / widths))
    for name in ("empirical", "theorem1", "eq6", "leading_order"):
        kernel[f"min_{name}"] = kernel[f"distance_{name}"] == kernel[f"distance_{name}"].min()
    (root / "kernel-fig7").mkdir()
    results.write_table(kernel, root / "kernel-fig7" / "kernel_distance.parquet", "kernel")
    return root, sweeps
