"""Parity with the official implementation's test vectors (realsr_small, float32, CPU)."""


from tests.helpers.models import rel_err

TOL = 1e-5


def test_unet_first_call(small_restorer, small_reference):
    t = small_reference[3]
    out = small_restorer.unet(t["unet_first_input"], t["unet_first_t"], lq=t["lq"])
    assert rel_err(out, t["unet_first_output"]) < TOL


def test_encode_matches_z_y(small_restorer, small_reference):
    t = small_reference[3]
    z_y = small_restorer.encode_lq(t["lq"])
    assert rel_err(z_y, t["z_y"]) < TOL


def test_decode_with_and_without_quantize(small_restorer, small_reference):
    t = small_reference[3]
    x0 = t["x_trajectory"][-1]
    assert rel_err(small_restorer.decode(x0), t["decoded_image"]) < TOL
    assert rel_err(small_restorer.decode(x0, quantize=False), t["decoded_without_quantize"]) < TOL


def test_whole_trajectory_with_given_noises(small_restorer, small_reference):
    t = small_reference[3]
    traj = small_restorer.sample(t["lq"], noises=list(t["noises"]), return_trajectory=True)
    assert len(traj) == t["x_trajectory"].shape[0]
    for i, (ours, ref) in enumerate(zip(traj, t["x_trajectory"])):
        assert rel_err(ours, ref) < TOL, f"state {i}"
