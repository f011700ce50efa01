"""Result keys: the stable names metrics are logged and stored under (prefixed by a split, e.g. `val/cfid`)."""

# sample quality on the dataset classifier's features (labelled data)
CFID = "cfid"
CKID = "ckid"
CIS = "cis"
MODES = "modes"
CLASS_KL = "class_kl"
PRECISION = "precision"
RECALL = "recall"
# sample quality on InceptionV3 features (when weights are available)
FID = "fid"
KID = "kid"
# reconstruction (models with `reconstruct`), pixels in [0, 1]
MSE = "recon_mse"
PSNR = "recon_psnr"
# the dataset classifier's label of a reconstruction equals the label of its input (BiGAN's G(E(x)), VAEs)
RECON_ACC = "recon_accuracy"
# conditional models: the dataset classifier's label of a sample equals the class it was asked for (ACGAN)
CLASS_AGREEMENT = "class_agreement"
# likelihood (VAEs), nats per image
NELBO = "nelbo"
IWAE = "iwae_nll"
# adversarial diagnostics, logged by the GAN family itself
JSD = "jsd"
WASSERSTEIN = "wasserstein"
D_ACC_REAL = "d_acc_real"
D_ACC_FAKE = "d_acc_fake"
AUX_ACC = "aux_acc"
# the dataset classifier's own test accuracy (protocol, not a model metric)
CLASSIFIER_ACC = "classifier_test_acc"
