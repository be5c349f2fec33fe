from django.urls import path

from studies import views

app_name = "studies"

urlpatterns = [
    path("", views.study_list_view, name="list"),
    path("studies/upload/", views.study_upload_view, name="upload"),
    path("studies/<int:pk>/", views.study_detail_view, name="detail"),
    path("studies/<int:pk>/review/", views.study_review_view, name="review"),
    path("studies/<int:pk>/requeue/", views.study_requeue_view, name="requeue"),
    path("review/", views.review_queue_view, name="queue"),
]
